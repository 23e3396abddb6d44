"""The package's own train step on the linear setting, held against the ODE
(paper Sec. 2-3: the flow of Lemma 1, Eqns. 2-4, and its modes, Sec. 3.1).

:func:`run_package` builds the real :class:`models.SiameseNetwork` from a
:class:`config.Config` -- ``backbone="linear"`` (one bias-free Dense ``W``),
``projector="none"``, ``predictor="linear"`` (or ``"directpred"``),
``loss="l2"``, plain SGD (momentum 0, coupled weight decay), EMA target
(``ema_tau > 0``, BYOL) or none (SimSiam) -- and trains it with ``model.fit``
on ``make_gaussian_views`` (``dataset="gaussian"``), reading ``W``, ``Wp``,
``Wa`` every ``record_every`` steps. :func:`run_ode` integrates the matrix flow of
:mod:`experiments.theory.matrix` from the same initial weights.

Time and hyper-parameter map (the package's loss ``L(p1, sg z2) + L(p2, sg z1)``
with ``L = ||.||^2`` has expectation ``4 J``; SGD is Euler's method): one SGD step
of rate ``lr`` is ``dt = 4 lr`` of the flow; ``weight_decay = 4 eta``;
``predictor_lr_multiplier = alpha_p`` with ``predictor_weight_decay = 4 eta /
alpha_p`` (the multiplier scales the coupled decay too);
``ema_tau = 1 - beta dt``. The ODE uses the second moments of the very sample the
package trains on (``X = E[x1 x2^T]``, ``X + X' = E[x1 x1^T]``, both symmetrised
over the two views), so what is left between the two is minibatch noise, float32
and Euler's ``O(dt)``.

TensorFlow is imported inside the functions only (``experiments.theory`` stays
NumPy-only on import).
"""

from __future__ import annotations

import dataclasses
import textwrap
from typing import Optional

import numpy as np

from experiments.theory import matrix as M

#: Max relative deviation of (p_j, s_j) allowed between the package and the ODE
#: (deviation over the run / the largest |value| of the ODE's run), tested.
TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class Run:
    """One package-vs-ODE setting."""

    name: str
    method: str = "simsiam"  # simsiam | byol | directpred (EMA) | directset (EMA iff beta)
    eta: float = 0.05
    alpha_p: float = 1.0
    beta: Optional[float] = None  # EMA rate (byol / directpred)
    init_scale: float = 0.7
    wp_scale: Optional[float] = None
    steps: int = 2000
    lr: float = 0.005
    batch_size: int = 512
    dim: int = 4
    sigma2: float = 0.5
    seed: int = 0
    num_examples: int = 65536
    record_every: int = 50
    eps: float = 0.1
    corr_rho: float = 0.0  # DirectPred's F accumulator (0: the batch's E[z z^T])
    isotropic: bool = True  # False: anisotropic X, X' (matrix.covariances), no assumption
    symmetric: bool = False  # Config.symmetry (symmetric Wp, the paper's assumption)
    wp_identity: float = 0.0  # Wp(0) = noise + wp_identity * I
    set_alpha: float = 1.0  # DirectSet's alpha (eps: ``eps``, before the power)
    isoloss: bool = False  # IsoLoss (computed predictors): dW/dt without Wp^T

    @property
    def dt(self):
        return 4.0 * self.lr


def initial_state(run: Run) -> M.State:
    st = M.random_state(run.dim, run.init_scale, seed=run.seed + 100,
                        wp_scale=run.wp_scale, symmetric_wp=run.symmetric)
    return M.State(st.W, st.Wp + run.wp_identity * np.eye(run.dim), st.Wa)


def sample(run: Run):
    """The run's data (``make_gaussian_views``) and its second moments ``(X, X + X')``."""
    from data_processing.sources import make_gaussian_views
    data_cov = aug_cov = None
    if not run.isotropic:
        data_cov, aug_cov = M.covariances(run.dim, run.sigma2, isotropic=False, seed=run.seed)
    x1, x2 = make_gaussian_views(run.num_examples, run.dim, seed=run.seed, sigma2=run.sigma2,
                                 data_cov=data_cov, aug_cov=aug_cov)
    a, b = x1.astype(np.float64), x2.astype(np.float64)
    n = len(a)
    X = M.sym(a.T @ b / n)
    Xt = 0.5 * (a.T @ a + b.T @ b) / n
    return (x1, x2), X, Xt


def make_config(run: Run):
    from config import Config
    ema = run.method in ("byol", "directpred") or (run.method == "directset" and run.beta)
    if ema and not run.beta:
        raise ValueError(f"method={run.method!r} needs beta > 0. Received: beta={run.beta!r}")
    pred = run.method if run.method in ("directpred", "directset") else "linear"
    alpha = 1.0 if pred != "linear" else run.alpha_p
    # Only the options this variant uses (config.OPTION_RULES refuses the others).
    if pred != "linear":
        own = dict(predictor_eps=run.eps, corr_rho=run.corr_rho, isoloss=run.isoloss)
        if pred == "directset":
            own.update(directset_alpha=run.set_alpha, directset_eps_at="before_power")
    else:
        own = dict(predictor_lr_multiplier=alpha, predictor_weight_decay=4.0 * run.eta / alpha,
                   symmetry=run.symmetric)
    return Config(
        name=f"theory_{run.name}", dataset="gaussian", image_size=run.dim, backbone="linear",
        width=1.0, projector="none", projection_dim=run.dim, predictor=pred, loss="l2",
        optimizer="sgd", learning_rate=run.lr, momentum=0.0, weight_decay=4.0 * run.eta,
        weight_init="keras",  # the theory's own initial weights, as before config version 3
        ema_tau=(1.0 - run.beta * run.dt) if ema else 0.0, batch_size=run.batch_size,
        seed=run.seed, **own)


def _weights(model):
    from models import heads
    W = model.online_encoder.get_layer("linear").kernel.numpy().T.astype(np.float64)
    Wp = heads.dense_kernels(model.predictor)[0].numpy().T.astype(np.float64)
    if model.target_encoder is not None:
        Wa = model.target_encoder.get_layer("linear").kernel.numpy().T.astype(np.float64)
    else:
        Wa = W.copy()
    return M.State(W, Wp, Wa)


def run_package(run: Run, data=None, X_total=None):
    """Trains the real ``SiameseNetwork`` and returns ``(steps, states)``."""
    import keras
    import tensorflow as tf

    from models import SiameseNetwork, build_optimizer, heads

    if data is None:
        data, _, X_total = sample(run)
    config = make_config(run)
    keras.utils.set_random_seed(run.seed)
    model = SiameseNetwork(config)
    st = initial_state(run)
    Wp0 = (M.directpred_predictor(st.W, X_total, run.eps) if run.method == "directpred"
           else M.directset_predictor(st.W, X_total, run.set_alpha, run.eps)
           if run.method == "directset" else st.Wp)
    model.online_encoder.get_layer("linear").kernel.assign(st.W.T.astype(np.float32))
    if model.target_encoder is not None:
        model.target_encoder.get_layer("linear").kernel.assign(st.W.T.astype(np.float32))
    heads.dense_kernels(model.predictor)[0].assign(Wp0.T.astype(np.float32))
    model.compile(optimizer=build_optimizer(config), steps_per_execution=run.record_every)
    model.set_total_steps(run.steps)
    # The sample is i.i.d.: batches in order, repeated (no shuffle needed).
    ds = (tf.data.Dataset.from_tensor_slices(data).batch(run.batch_size, drop_remainder=True)
          .repeat().prefetch(2))
    states = [_weights(model)]

    class Recorder(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            states.append(_weights(model))

    epochs = run.steps // run.record_every
    model.fit(ds, epochs=epochs, steps_per_epoch=run.record_every, verbose=0,
              callbacks=[Recorder()])
    return np.arange(epochs + 1) * run.record_every, states


def ode_setting(run: Run, X, X_total):
    ema = run.method in ("byol", "directpred") or (run.method == "directset" and run.beta)
    pred = (run.method if run.method in ("directpred", "directset")
            else "symmetric" if run.symmetric else "trained")
    return M.Setting(X, X_total - X, eta=run.eta, alpha_p=run.alpha_p,
                     beta=run.beta or 1.0, target="ema" if ema else "online", predictor=pred,
                     directpred_eps=run.eps, directset_alpha=run.set_alpha,
                     loss="iso" if run.isoloss else "euclidean")


def run_ode(run: Run, X, X_total, dt=None):
    """The matrix flow from the package's initial weights; states at the package's
    record steps."""
    setting = ode_setting(run, X, X_total)
    dt_ode = dt or min(run.dt, 0.02)
    t_end = run.steps * run.dt
    _, states = M.integrate(initial_state(run), setting, t_end, dt_ode,
                            record_every=run.record_every * run.dt)
    return states


def outcome(states, X, rel_tol=1e-2):
    """Number of collapsed modes at the end: ``s_j(T) < rel_tol * max_j s_j(0)``."""
    _, s0 = M.mode_values(states[0].W, states[0].Wp, X)
    _, s1 = M.mode_values(states[-1].W, states[-1].Wp, X)
    return int(np.sum(s1 < rel_tol * s0.max()))


def deviation(pkg_states, ode_states, X):
    """Max relative deviation of ``p_j`` and ``s_j`` (each over the run, divided by
    the largest |value| of the ODE's run)."""
    n = min(len(pkg_states), len(ode_states))
    pk = [M.mode_values(s.W, s.Wp, X) for s in pkg_states[:n]]
    od = [M.mode_values(s.W, s.Wp, X) for s in ode_states[:n]]
    p_pk, s_pk = (np.array(v) for v in zip(*pk))
    p_od, s_od = (np.array(v) for v in zip(*od))
    dev_p = np.abs(p_pk - p_od).max() / max(np.abs(p_od).max(), 1e-12)
    dev_s = np.abs(s_pk - s_od).max() / max(np.abs(s_od).max(), 1e-12)
    return float(max(dev_p, dev_s)), {"p_pkg": p_pk, "s_pkg": s_pk, "p_ode": p_od,
                                      "s_ode": s_od}


def compare_one(run: Run):
    data, X, Xt = sample(run)
    steps, pkg = run_package(run, data, Xt)
    ode = run_ode(run, X, Xt)
    dev, traj = deviation(pkg, ode, X)
    return {"name": run.name, "method": run.method, "eta": run.eta, "alpha_p": run.alpha_p,
            "beta": run.beta, "init_scale": run.init_scale, "steps": run.steps,
            "ode_outcome": outcome(ode, X), "package_outcome": outcome(pkg, X),
            "max_rel_dev": dev, "trajectory": {k: v.tolist() for k, v in traj.items()},
            "record_steps": steps.tolist(), "dt": run.dt}


def default_runs(smoke=False):
    """The trajectory runs (BYOL, SimSiam, DirectPred) and the outcome settings."""
    if smoke:
        return [Run("smoke_simsiam", "simsiam", steps=40, record_every=20,
                    num_examples=2048, batch_size=256)]
    runs = [
        Run("simsiam", "simsiam", eta=0.05, steps=2000),
        Run("byol", "byol", eta=0.05, beta=1.0, steps=2000),
        # DirectPred's F from one batch is noisy (relative ~ 1 / sqrt(batch)); the
        # accumulator (Sec. 4, Eq. 19) with rho = 0.9 averages ~10 batches.
        Run("directpred", "directpred", eta=0.05, beta=1.0, steps=1000, corr_rho=0.9),
        Run("byol_anisotropic", "byol", eta=0.05, beta=1.0, steps=2000, isotropic=False,
            alpha_p=2.0),
    ]
    # Outcome settings: (eta, alpha_p, beta, init scale) on both sides of the
    # collapse threshold eta_c = 1 / (4 (1 + sigma2)) = 0.167 and of the basins.
    grid = [
        ("s_eta0.25", "simsiam", 0.25, 1.0, None, 0.7),
        ("s_eta0.1_small", "simsiam", 0.1, 1.0, None, 0.3),
        ("s_eta0.1_ap3", "simsiam", 0.1, 3.0, None, 0.3),
        ("s_eta0.15", "simsiam", 0.15, 1.0, None, 1.0),
        ("s_eta0.04_ap0.5", "simsiam", 0.04, 0.5, None, 0.5),
        ("b_eta0.25", "byol", 0.25, 1.0, 1.0, 0.7),
        ("b_eta0.1_beta0.3", "byol", 0.1, 1.0, 0.3, 0.3),
        ("b_eta0.1_beta3", "byol", 0.1, 1.0, 3.0, 0.3),
        ("b_eta0.05_ap2", "byol", 0.05, 2.0, 1.0, 1.0),
        ("s_eta0.02_ap5", "simsiam", 0.02, 5.0, None, 1.0),
        ("d_eta0.3", "directpred", 0.3, 1.0, 1.0, 0.5),
    ]
    for name, method, eta, ap, beta, scale in grid:
        runs.append(Run(name, method, eta=eta, alpha_p=ap, beta=beta, init_scale=scale,
                        steps=2000, seed=1, corr_rho=0.9 if method == "directpred" else 0.0))
    runs.append(Run("s_anisotropic_eta0.1", "simsiam", eta=0.1, init_scale=0.5, steps=2000,
                    seed=2, isotropic=False))
    # Symmetric Wp (Config.symmetry: the kernel symmetrised after every step, which from
    # a symmetric start is the symmetrised gradient flow) and starts that keep every mode.
    runs.append(Run("s_symmetric_eta0.05", "simsiam", eta=0.05, steps=2000, seed=3,
                    symmetric=True))
    runs.append(Run("s_wp0.5I_eta0.05", "simsiam", eta=0.05, steps=2000, seed=4,
                    wp_identity=0.5, wp_scale=0.2))
    runs.append(Run("b_wp0.5I_eta0.1_ap2", "byol", eta=0.1, alpha_p=2.0, beta=0.5,
                    steps=2000, seed=5, wp_identity=0.5, wp_scale=0.2, init_scale=1.0))
    runs += successor_runs()
    return runs


def successor_runs():
    """DirectSet(alpha) (Wang et al. 2021, implicit-var-reg's eps before the power) and IsoLoss
    (Halvagal et al. 2023) on the same linear setting, with and without EMA."""
    # F from mini-batches is the noise here (relative ~ 1 / sqrt(batch)): DirectSet(1) with
    # eps 0.25 takes half the rate, IsoLoss(1) on anisotropic data also a larger batch.
    common = dict(steps=1000, corr_rho=0.9, init_scale=0.7)
    slow = dict(common, steps=2000, lr=0.0025)
    return [
        Run("directset1_ema", "directset", eta=0.05, beta=1.0, set_alpha=1.0, eps=0.25,
            seed=6, **slow),
        Run("directset0.5_no_ema", "directset", eta=0.02, set_alpha=0.5, eps=0.0, seed=7,
            isotropic=False, **common),
        Run("isoloss_ema", "directset", eta=0.05, beta=1.0, set_alpha=0.5, eps=0.0,
            isoloss=True, seed=8, **common),
        Run("isoloss1_no_ema", "directset", eta=0.02, set_alpha=1.0, eps=0.25, isoloss=True,
            seed=9, isotropic=False, **dict(slow, corr_rho=0.7, batch_size=1024)),
    ]


def compare(smoke=False, runs=None):
    """Every run of :func:`default_runs`; the ``package_vs_ode`` summary."""
    results = [compare_one(r) for r in (runs or default_runs(smoke))]
    for r, run in zip(results, runs or default_runs(smoke)):
        if run.method == "directset":
            r["method"] = ("isoloss on " if run.isoloss else "") + f"directset({run.set_alpha:g})"
    return {"settings": len(results),
            "outcome_agreement": sum(r["ode_outcome"] == r["package_outcome"]
                                     for r in results),
            "max_rel_dev": max(r["max_rel_dev"] for r in results),
            "tolerance": TOLERANCE, "runs": results}


#: How the title of ``package_vs_ode.png`` starts (the paper has no such figure).
TITLE_PREFIX = "No paper figure (Lemma 1, Sec. 2, Eqns. 2-4"


def draw(summary):
    """Package (dots) against the ODE (lines): ``p_j`` and ``s_j`` of the first
    runs. No paper figure: our check of the train step against Lemma 1's flow.
    Returns the :class:`matplotlib.figure.Figure`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = summary["runs"][:4]
    fig, axes = plt.subplots(2, len(runs), figsize=(4.6 * len(runs), 7.3), squeeze=False)
    for col, r in enumerate(runs):
        t = np.array(r["record_steps"]) * r["dt"]
        tr = {k: np.array(v) for k, v in r["trajectory"].items()}
        n = min(len(t), len(tr["s_ode"]))
        for row, key in enumerate(("s", "p")):
            ax = axes[row, col]
            for j in range(tr[key + "_ode"].shape[1]):
                ax.plot(t[:n], tr[key + "_ode"][:n, j], color=f"C{j}", lw=1.5)
                ax.plot(t[:n], tr[key + "_pkg"][:n, j], "o", color=f"C{j}", ms=3)
            ax.set_xlabel("t = 4 lr x step")
            ax.set_ylabel(f"{key}_j")
            ax.set_title(f"{r['name']}: {key}_j, package (dots) vs ODE (lines)\n"
                         f"eta={r['eta']:g}, alpha_p={r['alpha_p']:g}, beta={r['beta']}, "
                         f"max rel dev {r['max_rel_dev']:.3f}", fontsize=9)
    title = (TITLE_PREFIX + "; p_j, s_j as in Sec. 3.1): the package's SiameseNetwork "
             "train step vs the linear ODE, "
             f"{summary['outcome_agreement']}/{summary['settings']} outcomes agree, "
             f"max rel dev {summary['max_rel_dev']:.3g}")
    # About 11 characters of 10 pt text per inch: wrap to the figure's width.
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 11)), fontsize=10)
    fig.tight_layout()
    return fig


def figure(summary, path):
    """:func:`draw`, saved to ``path`` (returned)."""
    import matplotlib.pyplot as plt

    fig = draw(summary)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
