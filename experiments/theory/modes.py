"""Decoupled per-eigenmode dynamics of the linear model (paper Sec. 3.1-3.2).

Under the paper's assumptions -- ``X = I``, isotropic augmentation
``X' = sigma2 I`` (Assumption 2), symmetric ``Wp`` (Assumption 3) sharing its
eigenbasis with ``F = W W^T`` (the alignment of Theorem 3), and a target
proportional to the online weights ``Wa = tau W`` (Assumption 1) -- the matrix
flow of :mod:`experiments.theory.matrix` decouples into one system per
eigenmode ``j`` (``p_j``: eigenvalue of ``Wp``; ``s_j``: eigenvalue of ``F``;
``tau_j``: ratio of target to online weights along the mode)::

    dp/dt   = alpha_p s (tau - (1 + sigma2) p) - eta p
    ds/dt   = 2 p s (tau - (1 + sigma2) p) - 2 eta s
    dtau/dt = beta (1 - tau) - tau (ds/dt) / (2 s)        (EMA; SimSiam: tau = 1)

(Eqns. 11, 12 and 13 of the paper; its Fig. 3 draws the first two at ``tau = 1``.)

Derived here from the matrix flow with ``W = sqrt(s) u v^T`` per mode
(``d sqrt(s)/dt = (ds/dt) / (2 sqrt(s))``); the tests hold it against the matrix
flow. With DirectPred the predictor is not trained: ``p_j = sqrt(s_j / s_max)
+ eps`` (Sec. 4, Eq. 18, in the package's normalised form; the paper writes
``sqrt(s_j) + eps max_j s_j``), which couples the modes through ``s_max``.

Consequences (Sec. 3.2), each computed by a function below:

- ``eta = 0``: ``d/dt (s - p^2 / alpha_p) = 0``, the invariant parabola
  (:func:`invariant`; the exact integral of Eq. 14 at ``eta = 0``), whatever
  ``tau(t)``;
- fixed points with ``s > 0`` and ``tau = 1``: ``s* = p*^2 / alpha_p`` and
  ``(1 + sigma2) p*^2 - p* + eta = 0`` (:func:`fixed_points`; the roots
  ``p*_{j+-}`` of Eq. 16, Fig. 4(b)); the larger root is stable, the smaller a
  saddle, ``(0, 0)`` stable for ``eta > 0``;
- no non-trivial fixed point (every mode collapses) when
  ``eta > 1 / (4 (1 + sigma2))`` (:func:`collapse_threshold`; Obs#5, Fig. 4(c)).

Integrator: fixed-step RK4 on the equivalent weight form (:func:`rhs_weights`),
vectorised over modes / initial conditions.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np


@dataclasses.dataclass(frozen=True)
class ModeSetting:
    """Hyper-parameters of the decoupled dynamics. ``beta=None``: SimSiam
    (``tau = 1``); ``predictor="directpred"``: ``p`` set from ``s``."""

    sigma2: float = 0.5
    eta: float = 0.0
    alpha_p: float = 1.0
    beta: Optional[float] = None
    predictor: str = "trained"
    eps: float = 0.1

    def __post_init__(self):
        if self.predictor not in ("trained", "directpred"):
            raise ValueError("predictor must be one of ['trained', 'directpred']. "
                             f"Received: predictor={self.predictor!r}")


def directpred_p(s, eps=0.1):
    """``p_j = sqrt(max(s_j, 0) / s_max) + eps`` over the last axis (Sec. 4, Eq. 18,
    normalised as the package does)."""
    s = np.maximum(np.asarray(s, dtype=float), 0.0)
    s_max = np.maximum(s.max(axis=-1, keepdims=True), 1e-30)
    return np.sqrt(s / s_max) + eps


def rhs(p, s, tau, setting: ModeSetting):
    """``(dp/dt, ds/dt, dtau/dt)`` of the decoupled dynamics (Eqns. 11-13)."""
    c = 1.0 + setting.sigma2
    if setting.predictor == "directpred":
        p = directpred_p(s, setting.eps)
    gap = tau - c * p
    growth = p * gap - setting.eta  # (ds/dt) / (2 s)
    dp = setting.alpha_p * s * gap - setting.eta * p
    if setting.predictor == "directpred":
        dp = np.zeros_like(p)
    ds = 2.0 * s * growth
    if setting.beta is None:
        dtau = np.zeros_like(tau)
    else:
        dtau = setting.beta * (1.0 - tau) - tau * growth
    return dp, ds, dtau


def rhs_weights(p, w, a, setting: ModeSetting):
    """The same dynamics in the weights along the mode: ``w = sqrt(s)`` (online),
    ``a = tau w`` (target), ``p``. From the matrix flow (Sec. 2, Lemma 1) with
    ``X = I``, ``X' = sigma2 I``::

        dw/dt = p (a - (1 + sigma2) p w) - eta w
        dp/dt = alpha_p w (a - (1 + sigma2) p w) - eta p
        da/dt = beta (w - a)                    (SimSiam: a = w)

    Equivalent to :func:`rhs` (``ds = 2 w dw``, ``dtau = (w da - a dw) / w^2``) but
    not stiff where ``s -> 0`` with ``tau -> inf`` (a collapsing mode under a slow
    EMA), so :func:`integrate` uses it."""
    c = 1.0 + setting.sigma2
    if setting.predictor == "directpred":
        p = directpred_p(w * w, setting.eps)
    if setting.beta is None:
        a = w
    g = a - c * p * w
    dw = p * g - setting.eta * w
    dp = (np.zeros_like(p) if setting.predictor == "directpred"
          else setting.alpha_p * w * g - setting.eta * p)
    da = np.zeros_like(a) if setting.beta is None else setting.beta * (w - a)
    return dp, dw, da


def integrate(p0, s0, setting: ModeSetting, t_end, dt=0.01, tau0=1.0, n_records=100):
    """RK4 (on :func:`rhs_weights`) from ``(p0, s0, tau0)`` (broadcast arrays) to
    ``t_end``.

    Returns ``(times, p, s, tau)`` with a leading time axis of ``n_records + 1``
    (``tau = nan`` where ``s = 0``). For DirectPred the returned ``p`` is the
    computed one.
    """
    p, s, tau = np.broadcast_arrays(np.asarray(p0, dtype=float), np.asarray(s0, dtype=float),
                                    np.asarray(tau0, dtype=float))
    p = p.copy()
    w = np.sqrt(np.maximum(s, 0.0))
    a = w * (tau if setting.beta is not None else 1.0)
    if setting.predictor == "directpred":
        p = directpred_p(w * w, setting.eps)
    n = int(round(t_end / dt))
    every = max(1, n // n_records) if n else 1

    def record():
        s_now = w * w
        with np.errstate(divide="ignore", invalid="ignore"):
            tau_now = np.where(w != 0, a / np.where(w != 0, w, 1.0), np.nan)
        if setting.beta is None:
            tau_now = np.ones_like(w)
        return p.copy(), s_now, tau_now

    times, recs = [0.0], [record()]
    for k in range(1, n + 1):
        k1 = rhs_weights(p, w, a, setting)
        k2 = rhs_weights(p + dt / 2 * k1[0], w + dt / 2 * k1[1], a + dt / 2 * k1[2], setting)
        k3 = rhs_weights(p + dt / 2 * k2[0], w + dt / 2 * k2[1], a + dt / 2 * k2[2], setting)
        k4 = rhs_weights(p + dt * k3[0], w + dt * k3[1], a + dt * k3[2], setting)
        p = p + dt / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        w = w + dt / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        a = a + dt / 6 * (k1[2] + 2 * k2[2] + 2 * k3[2] + k4[2])
        if setting.beta is None:
            a = w
        if setting.predictor == "directpred":
            p = directpred_p(w * w, setting.eps)
        if k % every == 0 or k == n:
            times.append(k * dt)
            recs.append(record())
    ps, ss, taus = (np.array(x) for x in zip(*recs))
    return np.array(times), ps, ss, taus


def invariant(p, s, alpha_p=1.0):
    """``s - p^2 / alpha_p``: constant along the flow when ``eta = 0``
    (Sec. 3.2, Eq. 14: ``s_j = p_j^2 / alpha_p + exp(-2 eta t) c_j``)."""
    return np.asarray(s) - np.asarray(p) ** 2 / alpha_p


def collapse_threshold(sigma2, tau=1.0):
    """The weight decay above which no mode has a non-trivial fixed point:
    ``eta_c = tau^2 / (4 (1 + sigma2))`` (Sec. 3.2, Obs#5, Fig. 4(c))."""
    return tau ** 2 / (4.0 * (1.0 + sigma2))


def fixed_points(setting: ModeSetting, tau=1.0):
    """Fixed points of the SimSiam-form ``(p, s)`` system (``tau`` fixed), each
    ``(p, s, kind)`` with ``kind`` from the Jacobian's eigenvalues: ``"stable"``,
    ``"saddle"``, ``"unstable"`` or ``"marginal"``. Always contains ``(0, 0)``;
    the non-trivial ones are ``p = (tau +- sqrt(tau^2 - 4 eta (1 + sigma2)))
    / (2 (1 + sigma2))`` (``p*_{j+-}`` of Sec. 3.2), ``s = p^2 / alpha_p``
    (``eta > 0``)."""
    c = 1.0 + setting.sigma2
    eta = setting.eta
    points = [(0.0, 0.0)]
    if eta > 0:
        disc = tau ** 2 - 4.0 * eta * c
        if disc >= 0:
            for sign in (+1.0, -1.0):
                p = (tau + sign * np.sqrt(disc)) / (2.0 * c)
                points.append((float(p), float(p ** 2 / setting.alpha_p)))
    return [(p, s, _kind(jacobian(p, s, setting, tau))) for p, s in points]


def jacobian(p, s, setting: ModeSetting, tau=1.0):
    """Analytic Jacobian of ``(dp/dt, ds/dt)`` w.r.t. ``(p, s)`` at fixed ``tau``."""
    c, a, eta = 1.0 + setting.sigma2, setting.alpha_p, setting.eta
    return np.array([
        [-a * s * c - eta, a * (tau - c * p)],
        [2.0 * s * (tau - 2.0 * c * p), 2.0 * (p * (tau - c * p) - eta)],
    ])


def _kind(jac, tol=1e-12):
    re = np.linalg.eigvals(jac).real
    if np.all(re < -tol):
        return "stable"
    if np.all(re > tol):
        return "unstable"
    if np.any(re < -tol) and np.any(re > tol):
        return "saddle"
    return "marginal"


def collapsed(s_end, s_ref, rel_tol=1e-2):
    """A mode has collapsed when its final ``s`` is below ``rel_tol * s_ref``."""
    return np.asarray(s_end) < rel_tol * np.asarray(s_ref)
