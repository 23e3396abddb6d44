"""The paper's linear-network theory (Tian, Chen & Ganguli 2021, Sec. 3-4), in NumPy.

- :mod:`experiments.theory.matrix`: the full gradient flow of ``W``, ``Wp``, ``Wa``
  (Sec. 3, Lemma 1) for any data covariance ``X`` and augmentation covariance
  ``X'``, with its variants (no stop-gradient, no predictor, symmetric ``Wp``,
  no EMA, DirectPred), a fixed-step RK4 integrator and the measured quantities
  (balance ``Wp^T Wp - alpha_p W W^T``, commutator ``[Wp, F]``).
- :mod:`experiments.theory.modes`: the decoupled per-eigenmode dynamics of Sec. 4
  (``p_j``, ``s_j``, ``tau_j``), their fixed points, the ``eta = 0`` invariant
  parabola and the collapse threshold.
- :mod:`experiments.theory.claims`: every claim of Sec. 3-4 as a measured number.
- :mod:`experiments.theory.figures`: the PNGs of ``reproduce_theory.py``.
- :mod:`experiments.theory.package_run`: the package's own ``SiameseNetwork``
  train step on the same linear setting, held against the ODE. It is the only
  module that needs TensorFlow, and imports it inside its functions only:
  importing this package never loads TensorFlow.
"""
