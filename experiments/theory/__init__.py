"""The paper's linear-network theory (Tian, Chen & Ganguli 2021, Sec. 2-3), in NumPy.

Section, equation, theorem and figure numbers are those of the paper (ICML 2021;
the same numbering as arXiv:2102.06810 with its supplementary material).

- :mod:`experiments.theory.matrix`: the full gradient flow of ``W``, ``Wp``, ``Wa``
  (Sec. 2, Lemma 1, Eqns. 2-4) for any data covariance ``X`` and augmentation
  covariance ``X'``, with its variants (no stop-gradient, no predictor, symmetric ``Wp``,
  no EMA, DirectPred), a fixed-step RK4 integrator and the measured quantities
  (balance ``Wp^T Wp - alpha_p W W^T``, commutator ``[Wp, F]``).
- :mod:`experiments.theory.modes`: the decoupled per-eigenmode dynamics of Sec. 3.1
  (``p_j``, ``s_j``, ``tau_j``, Eqns. 11-13), their fixed points, the ``eta = 0``
  invariant parabola (Eq. 14) and the collapse threshold (Sec. 3.2).
- :mod:`experiments.theory.claims`: every claim of Sec. 2-3 as a measured number.
- :mod:`experiments.theory.figures`: the PNGs of ``reproduce_theory.py``, each
  titled with the paper figure it reproduces (Fig. 3, Fig. 9) or "No paper figure".
- :mod:`experiments.theory.package_run`: the package's own ``SiameseNetwork``
  train step on the same linear setting, held against the ODE. It is the only
  module that needs TensorFlow, and imports it inside its functions only:
  importing this package never loads TensorFlow.
"""
