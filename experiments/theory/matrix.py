"""Full matrix gradient flow of the linear Siamese network (paper Sec. 2).

Setting (Sec. 2, Eq. 1): a data point ``x`` has the augmentation mean ``xbar``
and two views ``x1, x2`` drawn independently given ``xbar``. ``X = E[xbar xbar^T]``
(data covariance), ``X' = E[V[x | xbar]]`` (augmentation covariance), so
``E[x1 x1^T] = X + X'`` and ``E[x1 x2^T] = X``. The online network is ``W``
(``n2 x n1``), the predictor ``Wp`` (``n2 x n2``), the target ``Wa`` (``n2 x n1``)::

    J(W, Wp) = 1/2 E || Wp W x1 - sg(Wa x2) ||^2

and the flow with weight decay ``eta``, predictor relative rate ``alpha_p`` and
EMA rate ``beta`` (Sec. 2, Lemma 1, Eqns. 2-4)::

    dWp/dt = alpha_p (-Wp W (X + X') + Wa X) W^T - eta Wp
    dW/dt  = Wp^T (-Wp W (X + X') + Wa X)        - eta W
    dWa/dt = beta (W - Wa)

Variants (:class:`Setting`): ``target="ema"`` (BYOL, the equations above),
``"online"`` (SimSiam: ``Wa = W`` under stop-gradient, the ``beta -> inf`` limit),
``"online_no_sg"`` (``Wa = W`` and the gradient flows through the target too);
``predictor="trained"``, ``"symmetric"`` (``dWp/dt`` symmetrised: the paper's
Assumption 3, Sec. 3), ``"identity"`` (no predictor: ``Wp = I``) or ``"directpred"``
(``Wp = U diag(sqrt(s / s_max) + eps) U^T`` from ``F_z = W (X + X') W^T``, Sec. 4,
Eq. 18, as the package's DirectPred sets it).

Integrator: classical fixed-step RK4 (:func:`integrate`), step ``dt`` stated by
the caller (0.01 by default); ``Wp`` of DirectPred is recomputed from ``W`` at
every stage.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

TARGETS = ("ema", "online", "online_no_sg")
PREDICTORS = ("trained", "symmetric", "identity", "directpred", "directset")
#: ``euclidean``: the flow above; ``iso``: IsoLoss (Halvagal et al. 2023), ``dW/dt`` without
#: the factor ``Wp^T`` (docs/successors.md).
LOSSES = ("euclidean", "iso")


@dataclasses.dataclass(frozen=True)
class Setting:
    """One linear setting: covariances, hyper-parameters and variant."""

    X: np.ndarray
    X_aug: np.ndarray
    eta: float = 0.0
    alpha_p: float = 1.0
    beta: float = 1.0
    target: str = "ema"
    predictor: str = "trained"
    directpred_eps: float = 0.1  # also DirectSet's eps
    directset_alpha: float = 0.5
    directset_eps_at: str = "before_power"
    loss: str = "euclidean"

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {list(LOSSES)}. Received: loss={self.loss!r}")
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {list(TARGETS)}. "
                             f"Received: target={self.target!r}")
        if self.predictor not in PREDICTORS:
            raise ValueError(f"predictor must be one of {list(PREDICTORS)}. "
                             f"Received: predictor={self.predictor!r}")
        X, Xa = np.asarray(self.X), np.asarray(self.X_aug)
        if X.ndim != 2 or X.shape[0] != X.shape[1] or X.shape != Xa.shape:
            raise ValueError("X and X_aug must be square and of the same shape. "
                             f"Received: X {X.shape}, X_aug {Xa.shape}")


@dataclasses.dataclass
class State:
    """``W`` (n2 x n1), ``Wp`` (n2 x n2), ``Wa`` (n2 x n1)."""

    W: np.ndarray
    Wp: np.ndarray
    Wa: np.ndarray

    def copy(self):
        return State(self.W.copy(), self.Wp.copy(), self.Wa.copy())


def sym(a):
    """``(A + A^T) / 2``."""
    return 0.5 * (a + a.T)


def directpred_predictor(W, X_aug_total, eps=0.1):
    """DirectPred's ``Wp`` from ``F_z = W (X + X') W^T`` (Sec. 4, Eq. 18):
    ``p_j = sqrt(s_j / s_max) + eps`` in the eigenbasis of ``F_z``."""
    f = sym(W @ X_aug_total @ W.T)
    s, u = np.linalg.eigh(f)
    s_max = max(float(s.max()), 1e-30)
    p = np.sqrt(np.maximum(s, 0.0) / s_max) + eps
    p = np.maximum(p, 1e-4)
    return (u * p) @ u.T


def directset_predictor(W, X_aug_total, alpha=0.5, eps=0.0, eps_at="before_power"):
    """DirectSet(alpha)'s ``Wp`` from ``F_z = W (X + X') W^T`` (Wang et al. 2021; the rule of
    ``models.predictors.direct_set_weights``): ``r_j^alpha + eps`` or ``(r_j + eps)^alpha``."""
    s, u = np.linalg.eigh(sym(W @ X_aug_total @ W.T))
    r = np.maximum(s, 0.0) / max(float(s.max()), 1e-30)
    p = r ** alpha + eps if eps_at == "after_power" else (r + eps) ** alpha
    return (u * np.maximum(p, 1e-4)) @ u.T


def effective(state: State, setting: Setting) -> State:
    """The state with the constrained parts filled in: ``Wa = W`` for the online
    targets, ``Wp = I`` for no predictor, DirectPred's ``Wp(W)``."""
    W, Wp, Wa = state.W, state.Wp, state.Wa
    if setting.target != "ema":
        Wa = W
    if setting.predictor == "identity":
        Wp = np.eye(W.shape[0])
    elif setting.predictor == "directpred":
        Wp = directpred_predictor(W, setting.X + setting.X_aug, setting.directpred_eps)
    elif setting.predictor == "directset":
        Wp = directset_predictor(W, setting.X + setting.X_aug, setting.directset_alpha,
                                 setting.directpred_eps, setting.directset_eps_at)
    return State(W, Wp, Wa)


def loss(state: State, setting: Setting) -> float:
    """``J = 1/2 E||Wp W x1 - Wa x2||^2`` in closed form (Sec. 2, Eq. 1)::

        1/2 tr(Wp W (X+X') W^T Wp^T) - tr(Wp W X Wa^T) + 1/2 tr(Wa (X+X') Wa^T)
    """
    W, Wp, Wa = state.W, state.Wp, state.Wa
    X, Xt = setting.X, setting.X + setting.X_aug
    A = Wp @ W
    return float(0.5 * np.trace(A @ Xt @ A.T) - np.trace(A @ X @ Wa.T)
                 + 0.5 * np.trace(Wa @ Xt @ Wa.T))


def rhs(state: State, setting: Setting) -> State:
    """Time derivatives ``(dW/dt, dWp/dt, dWa/dt)`` of the flow (Sec. 2, Lemma 1,
    Eqns. 2-4) for the variant of ``setting``; constrained parts have derivative 0."""
    s = effective(state, setting)
    W, Wp, Wa = s.W, s.Wp, s.Wa
    X, Xt, eta = setting.X, setting.X + setting.X_aug, setting.eta
    G = -Wp @ W @ Xt + Wa @ X  # = -dJ/d(Wp W)
    dW = (G if setting.loss == "iso" else Wp.T @ G) - eta * W
    if setting.target == "online_no_sg":  # gradient through the target W x2 too
        dW = dW + (Wp @ W @ X - W @ Xt)
    if setting.predictor == "trained":
        dWp = setting.alpha_p * G @ W.T - eta * Wp
    elif setting.predictor == "symmetric":
        dWp = setting.alpha_p * sym(G @ W.T) - eta * Wp
    else:
        dWp = np.zeros_like(Wp)
    if setting.target == "ema":
        dWa = setting.beta * (W - Wa)
    else:
        dWa = np.zeros_like(Wa)
    return State(dW, dWp, dWa)


def _axpy(a, d: State, x: State) -> State:
    return State(x.W + a * d.W, x.Wp + a * d.Wp, x.Wa + a * d.Wa)


def rk4_step(state: State, setting: Setting, dt: float) -> State:
    """One classical Runge-Kutta 4 step of :func:`rhs`."""
    k1 = rhs(state, setting)
    k2 = rhs(_axpy(dt / 2, k1, state), setting)
    k3 = rhs(_axpy(dt / 2, k2, state), setting)
    k4 = rhs(_axpy(dt, k3, state), setting)
    return State(
        state.W + dt / 6 * (k1.W + 2 * k2.W + 2 * k3.W + k4.W),
        state.Wp + dt / 6 * (k1.Wp + 2 * k2.Wp + 2 * k3.Wp + k4.Wp),
        state.Wa + dt / 6 * (k1.Wa + 2 * k2.Wa + 2 * k3.Wa + k4.Wa))


def integrate(state: State, setting: Setting, t_end: float, dt: float = 0.01,
              record_every: Optional[float] = None):
    """Integrates from ``t = 0`` to ``t_end`` by RK4 with step ``dt``.

    Returns ``(times, states)``: the effective states (:func:`effective`) at
    ``t = 0`` and every ``record_every`` time units (default: 100 records).
    """
    if not dt > 0 or not t_end >= 0:
        raise ValueError(f"dt must be > 0 and t_end >= 0. Received: dt={dt!r}, "
                         f"t_end={t_end!r}")
    n = int(round(t_end / dt))
    every = max(1, int(round((record_every or max(t_end / 100, dt)) / dt)))
    state = effective(state, setting).copy()
    times, states = [0.0], [state.copy()]
    for k in range(1, n + 1):
        state = effective(rk4_step(state, setting, dt), setting)
        if k % every == 0 or k == n:
            times.append(k * dt)
            states.append(state.copy())
    return np.array(times), states


# ---------------------------------------------------------------------------
# Measured quantities.
# ---------------------------------------------------------------------------

def balance(state: State, alpha_p: float = 1.0) -> np.ndarray:
    """``Wp^T Wp - alpha_p W W^T``. Under the flow,
    ``d/dt (Wp^T Wp - alpha_p W W^T) = -2 eta (Wp^T Wp - alpha_p W W^T)``
    for any ``X``, ``X'``, ``Wa`` and any (also non-symmetric) ``Wp``: Theorem 1
    (Sec. 2, Eq. 5: ``W W^T = Wp^T Wp / alpha_p + exp(-2 eta t) C``). It decays as
    ``exp(-2 eta t)`` and is conserved when ``eta = 0``."""
    return state.Wp.T @ state.Wp - alpha_p * state.W @ state.W.T


def correlation(state: State, X: np.ndarray) -> np.ndarray:
    """``F = W X W^T``, the correlation of the predictor's input (Sec. 3.1)."""
    return state.W @ X @ state.W.T


def commutator(Wp: np.ndarray, F: np.ndarray) -> float:
    """``||Wp F - F Wp||_F / (||Wp||_F ||F||_F)``: 0 when ``Wp`` and ``F`` share an
    eigenbasis (Sec. 3.1, Theorem 3: eigenspace alignment)."""
    den = np.linalg.norm(Wp) * np.linalg.norm(F)
    return float(np.linalg.norm(Wp @ F - F @ Wp) / max(den, 1e-300))


def mode_values(W: np.ndarray, Wp: np.ndarray, X: np.ndarray):
    """``(p, s)`` per eigenmode: ``s_j`` the eigenvalues of ``F = W X W^T``
    (descending), ``p_j = u_j^T Wp u_j`` along its eigenvectors (Sec. 3.1)."""
    s, u = np.linalg.eigh(sym(W @ X @ W.T))
    order = np.argsort(s)[::-1]
    s, u = s[order], u[:, order]
    p = np.einsum("ij,ik,kj->j", u, Wp, u)
    return p, s


def covariances(n: int, sigma2: float = 0.5, *, isotropic: bool = True, seed: int = 0):
    """``(X, X')`` of the data model: ``X = I``, ``X' = sigma2 I`` (the paper's
    Assumption 2, Sec. 3) when ``isotropic``, else a random SPD ``X`` (eigenvalues
    log-spread in [0.3, 3], random basis) and an anisotropic ``X'`` (eigenvalues
    in [0.2, 2] x ``sigma2``, another random basis)."""
    if isotropic:
        return np.eye(n), sigma2 * np.eye(n)
    rng = np.random.default_rng(seed)
    q1, _ = np.linalg.qr(rng.normal(size=(n, n)))
    q2, _ = np.linalg.qr(rng.normal(size=(n, n)))
    X = (q1 * np.geomspace(3.0, 0.3, n)) @ q1.T
    Xa = (q2 * (sigma2 * np.geomspace(2.0, 0.2, n))) @ q2.T
    return sym(X), sym(Xa)


def random_state(n: int, scale: float = 0.5, *, seed: int = 0, symmetric_wp: bool = False,
                 wp_scale: Optional[float] = None) -> State:
    """A random initial state, entries ``N(0, scale^2 / n)``; ``Wa = W``."""
    rng = np.random.default_rng(seed)
    W = rng.normal(scale=scale / np.sqrt(n), size=(n, n))
    Wp = rng.normal(scale=(wp_scale if wp_scale is not None else scale) / np.sqrt(n),
                    size=(n, n))
    if symmetric_wp:
        Wp = sym(Wp)
    return State(W, Wp, W.copy())
