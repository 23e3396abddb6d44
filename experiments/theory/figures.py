"""Figures of the linear theory, written by ``reproduce_theory.py``.

Each PNG is titled with the figure of Tian, Chen & Ganguli (ICML 2021) it
reproduces, or says that the paper has none and which theorem / equation it
shows instead (section, equation and figure numbers as in the paper):

============================  ==========================================================
file                          paper counterpart
============================  ==========================================================
``fig3_phase_portraits_eta``  Fig. 3 (Sec. 3.2): state space of the decoupled dynamics
                              (Eqns. 11-12, ``tau = 1``) without, with weak and with
                              strong weight decay; fixed points, flow lines, invariant
                              parabola ``s_j = p_j^2 / alpha_p`` (Eq. 14). The panel
                              above ``eta_c`` is the regime of Fig. 4(c).
``alpha_p_basins``            none: the collapse region as the relative predictor rate
                              ``alpha_p`` grows (Sec. 3.2, Obs#1; the paper tests it on
                              STL-10 / CIFAR-10 in Fig. 6).
``ema_beta_basins``           none: the collapse region as the EMA rate ``beta`` falls
                              (Sec. 3.2, Obs#8-10, Eqns. 11-13; the time courses of
                              Fig. 5, bottom row, are the claim ``ema_slows_learning``).
``fig9_alignment_balance``    left: Fig. 9 (App. B.1; Theorem 3, Sec. 3.1, Eqns. 8-10),
                              the norm of the commutator ``[F, Wp]`` over time (the
                              paper's STL-10 counterpart: Fig. 2, third column); right:
                              Theorem 1 (Sec. 2, Eq. 5), which has no figure.
============================  ==========================================================

The drawing functions return the :class:`matplotlib.figure.Figure` (the tests read
the titles back from it); :func:`write_all` saves and closes them.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from experiments.theory import claims as C  # noqa: E402
from experiments.theory import matrix as M  # noqa: E402
from experiments.theory import modes as Q  # noqa: E402

P_RANGE = (-1.0, 1.2)
S_RANGE = (0.01, 1.5)

#: PNG name (without ``.png``) -> how its title starts; the paper's figure number,
#: or "No paper figure" followed by the theorem / equation it shows.
TITLE_PREFIX = {
    "fig3_phase_portraits_eta": "Paper Fig. 3 (Sec. 3.2",
    "alpha_p_basins": "No paper figure (Sec. 3.2, Obs#1",
    "ema_beta_basins": "No paper figure (Sec. 3.2, Obs#8-10",
    "fig9_alignment_balance": "Left: paper Fig. 9 (App. B.1",
}


def _phase_panel(ax, setting: Q.ModeSetting, n, t_end, title, trajectories=True):
    """One (p, s) panel: collapse region, flow, trajectories, fixed points."""
    frac, pg, sg, mask = C.collapse_fraction(setting, n, t_end, p_range=P_RANGE,
                                             s_range=S_RANGE)
    ax.contourf(pg, sg, mask.astype(float), levels=[0.5, 1.5], colors=["#f4b6b6"])
    pv, sv = np.meshgrid(np.linspace(*P_RANGE, 17), np.linspace(*S_RANGE, 13))
    if setting.beta is None:  # flow directions (tau = 1); EMA adds a third variable
        dp, ds, _ = Q.rhs(pv, sv, np.ones_like(pv), setting)
        norm = np.maximum(np.hypot(dp / np.ptp(P_RANGE), ds / np.ptp(S_RANGE)), 1e-12)
        ax.quiver(pv, sv, dp / norm, ds / norm, color="0.5", angles="xy", scale=40,
                  width=0.003)
    if trajectories:
        starts = [(-0.6, 0.3), (-0.2, 0.8), (0.1, 0.1), (0.0, 1.2), (0.9, 0.2), (-0.9, 1.4)]
        for p0, s0 in starts:
            _, p, s, _ = Q.integrate(p0, s0, setting, t_end, 0.05 if n > 20 else 0.2,
                                     n_records=4000)
            ax.plot(p[:, ], s, color="C0", lw=1.0)
            ax.plot(p[0], s[0], "o", color="C0", ms=3)
    if setting.beta is None and np.ndim(setting.eta) == 0:
        for p, s, kind in Q.fixed_points(setting):
            ax.plot(p, s, "*" if kind == "stable" else "x", color="k", ms=9 if
                    kind == "stable" else 7)
    if setting.eta == 0:
        pp = np.linspace(*P_RANGE, 200)
        for c in (-0.3, 0.0, 0.3, 0.6):
            ax.plot(pp, pp ** 2 / setting.alpha_p + c, ":", color="C2", lw=0.8)
    ax.set_xlim(*P_RANGE)
    ax.set_ylim(0, S_RANGE[1])
    ax.set_xlabel("$p_j$ (predictor eigenvalue)")
    ax.set_ylabel("$s_j$ (eigenvalue of F)")
    ax.set_title(f"{title}\ncollapse region (red): {frac:.1%} of starts", fontsize=9)
    return frac


def phase_portraits(smoke=False):
    """Paper Fig. 3 (Sec. 3.2): ``(p_j, s_j)`` state space of Eqns. 11-12 at
    ``tau = 1`` (SimSiam) for several ``eta``, with the collapse region."""
    n, t_end = (10, 20.0) if smoke else (70, 200.0)
    etas = (0.0, 0.05, 0.1, 0.2)
    eta_c = Q.collapse_threshold(C.SIGMA2)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8))
    for ax, eta in zip(axes, etas):
        extra = (f" > eta_c = {eta_c:.3f} (Fig. 4(c)):\nno fixed point but (0, 0)"
                 if eta > eta_c else "")
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, eta, 1.0), n, t_end,
                     f"eta = {eta:g}{extra}")
    fig.suptitle(TITLE_PREFIX["fig3_phase_portraits_eta"] + ", Eqns. 11-12 at tau = 1): "
                 "state space of the decoupled (p_j, s_j) dynamics, SimSiam, "
                 f"sigma^2 = {C.SIGMA2}, alpha_p = 1, eta = 0, 0.05, 0.1, 0.2 "
                 "(paper: 0, 0.01, 1)\n* stable fixed point, x saddle, blue: "
                 "trajectories, dotted: the eta = 0 parabolas s = p^2/alpha_p + c "
                 "(Eq. 14)", fontsize=10)
    fig.tight_layout()
    return fig


def alpha_p_basins(smoke=False):
    """No paper figure: the collapse region as ``alpha_p`` grows (Sec. 3.2, Obs#1;
    the paper's empirical test is Fig. 6)."""
    n, t_end = (10, 20.0) if smoke else (70, 200.0)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8))
    for ax, a in zip(axes, (0.5, 1.0, 2.0, 5.0)):
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, 0.05, a), n, t_end, f"alpha_p = {a:g}")
    fig.suptitle(TITLE_PREFIX["alpha_p_basins"] + ": a larger alpha_p flattens the "
                 "parabola s = p^2/alpha_p of Eq. 14; tested on STL-10 / CIFAR-10 in paper "
                 "Fig. 6)\ncollapse region vs the predictor's relative learning rate "
                 f"alpha_p, Eqns. 11-12 at tau = 1 (SimSiam), eta = 0.05, "
                 f"sigma^2 = {C.SIGMA2}", fontsize=10)
    fig.tight_layout()
    return fig


def ema_beta_basins(smoke=False):
    """No paper figure: the collapse region as the EMA rate ``beta`` falls
    (Sec. 3.2, Obs#8-10, Eqns. 11-13; cf. Fig. 5, bottom row)."""
    n, t_end = (10, 20.0) if smoke else (70, 200.0)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.8))
    for ax, b in zip(axes, (None, 2.0, 0.5, 0.1)):
        label = "no EMA (SimSiam, beta = inf)" if b is None else f"EMA beta = {b:g}"
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, 0.05, 1.0, b), n, t_end, label)
    fig.suptitle(TITLE_PREFIX["ema_beta_basins"] + ", Eqns. 11-13; the slower learning "
                 "of paper Fig. 5, bottom row, is the claim ema_slows_learning)\n"
                 "collapse region vs the EMA rate beta (BYOL, tau_j(0) = 1, eta = 0.05, "
                 f"alpha_p = 1, sigma^2 = {C.SIGMA2}): starts (p0, s0) that collapse; "
                 "with EMA the flow is 3-d (p, s, tau), so no arrows", fontsize=10)
    fig.tight_layout()
    return fig


def alignment(runs, smoke=False):
    """Left: paper Fig. 9 (App. B.1), the commutator ``[Wp, F]`` over time in the
    matrix flow (Theorem 3, Sec. 3.1); right: Theorem 1 (Sec. 2, Eq. 5), the
    weight-decay balance, which has no figure in the paper."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    ax = axes[0]
    for run in runs:
        ax.semilogy(run["times"], np.maximum(run["commutator"], 1e-17), label=run["label"])
    ax.set_xlabel("t")
    ax.set_ylabel("||Wp F - F Wp|| / (||Wp|| ||F||),  F = W X W^T")
    ax.set_title("Paper Fig. 9 / Theorem 3 (Eqns. 8-10): eigenspace alignment in the\n"
                 "matrix flow (Eqns. 2-4), EMA beta = 1, alpha_p = 1", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    X, Xa = M.covariances(C.N, C.SIGMA2, isotropic=False, seed=1)
    for eta, alpha_p in ((0.05, 1.0), (0.02, 1.0), (0.05, 3.0), (0.0, 2.0)):
        setting = M.Setting(X, Xa, eta=eta, alpha_p=alpha_p, beta=0.5)
        ts, states = M.integrate(M.random_state(C.N, 0.6, seed=4), setting,
                                 4.0 if smoke else 40.0, 0.05 if smoke else 0.02)
        b = np.array([np.linalg.norm(M.balance(s, alpha_p)) for s in states])
        ax.semilogy(ts, b / b[0], lw=2, label=f"eta={eta:g}, alpha_p={alpha_p:g}")
        ax.semilogy(ts, np.exp(-2 * eta * ts), "--", color="k", lw=0.8)
    ax.set_xlabel("t")
    ax.set_ylabel("||Wp^T Wp - alpha_p W W^T|| (relative)")
    ax.set_title("Theorem 1 (Eq. 5), no paper figure: weight-decay balance with\n"
                 "none of the assumptions (anisotropic X, X', non-symmetric Wp,\n"
                 "EMA); dashed: exp(-2 eta t)", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(TITLE_PREFIX["fig9_alignment_balance"] + "; Theorem 3, Sec. 3.1; on "
                 "STL-10: paper Fig. 2, third column). Right: Theorem 1 (Sec. 2), "
                 "no paper figure", fontsize=10)
    fig.tight_layout()
    return fig


def draw_all(data, smoke=False):
    """Every theory figure, as ``{PNG name without .png: Figure}``."""
    return {
        "fig3_phase_portraits_eta": phase_portraits(smoke),
        "alpha_p_basins": alpha_p_basins(smoke),
        "ema_beta_basins": ema_beta_basins(smoke),
        "fig9_alignment_balance": alignment(data["alignment"], smoke),
    }


def write_all(out_dir, data, smoke=False):
    """Every theory PNG into ``out_dir``; returns their paths."""
    paths = []
    for name, fig in draw_all(data, smoke).items():
        paths.append(os.path.join(out_dir, name + ".png"))
        fig.savefig(paths[-1], dpi=80)
        plt.close(fig)
    return paths
