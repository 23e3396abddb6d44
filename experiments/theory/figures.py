"""Figures of the linear theory (paper Sec. 3-4), written by ``reproduce_theory.py``."""

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


def phase_portraits(path, smoke=False):
    """(p_j, s_j) phase portraits with the collapse region for several eta (Sec. 4)."""
    n, t_end = (10, 20.0) if smoke else (70, 200.0)
    etas = (0.0, 0.05, 0.1, 0.2)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, eta in zip(axes, etas):
        extra = " (> eta_c: no fixed point)" if eta > Q.collapse_threshold(C.SIGMA2) else ""
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, eta, 1.0), n, t_end,
                     f"eta = {eta:g}{extra}")
    fig.suptitle("Paper Sec. 4: decoupled (p_j, s_j) dynamics, SimSiam (tau = 1), "
                 f"sigma^2 = {C.SIGMA2}, alpha_p = 1; * stable, x saddle, dotted: "
                 "eta = 0 invariant parabolas s = p^2/alpha_p + c", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def alpha_beta(path_alpha, path_beta, smoke=False):
    """Collapse regions as alpha_p and beta vary (Sec. 4)."""
    n, t_end = (10, 20.0) if smoke else (70, 200.0)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, a in zip(axes, (0.5, 1.0, 2.0, 5.0)):
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, 0.05, a), n, t_end, f"alpha_p = {a:g}")
    fig.suptitle("Paper Sec. 4: effect of the predictor's relative learning rate alpha_p "
                 f"(SimSiam, eta = 0.05, sigma^2 = {C.SIGMA2})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path_alpha, dpi=80)
    plt.close(fig)
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.4))
    for ax, b in zip(axes, (None, 2.0, 0.5, 0.1)):
        label = "no EMA (SimSiam, beta = inf)" if b is None else f"EMA beta = {b:g}"
        _phase_panel(ax, Q.ModeSetting(C.SIGMA2, 0.05, 1.0, b), n, t_end, label)
    fig.suptitle("Paper Sec. 4: effect of the EMA rate beta (BYOL; tau_j(0) = 1, "
                 f"eta = 0.05, alpha_p = 1, sigma^2 = {C.SIGMA2}); region = starts "
                 "(p0, s0) that collapse; with EMA the flow is 3-d (p, s, tau): no arrows",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path_beta, dpi=80)
    plt.close(fig)


def alignment(path, runs, smoke=False):
    """Eigenspace alignment of Wp and F over time in the matrix flow (Sec. 3), and
    the weight-decay balance."""
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.6))
    ax = axes[0]
    for run in runs:
        ax.semilogy(run["times"], np.maximum(run["commutator"], 1e-17), label=run["label"])
    ax.set_xlabel("t")
    ax.set_ylabel("||Wp F - F Wp|| / (||Wp|| ||F||),  F = W X W^T")
    ax.set_title("Eigenspace alignment (paper Sec. 3), EMA beta = 1, alpha_p = 1", fontsize=10)
    ax.legend(fontsize=7)
    ax = axes[1]
    X, Xa = M.covariances(C.N, C.SIGMA2, isotropic=False, seed=1)
    for eta, alpha_p in ((0.05, 1.0), (0.02, 1.0), (0.05, 3.0), (0.0, 2.0)):
        setting = M.Setting(X, Xa, eta=eta, alpha_p=alpha_p, beta=0.5)
        ts, states = M.integrate(M.random_state(C.N, 0.6, seed=4), setting,
                                 4.0 if smoke else 40.0, 0.05 if smoke else 0.02)
        b = np.array([np.linalg.norm(M.balance(s, alpha_p)) for s in states])
        line, = ax.semilogy(ts, b / b[0], lw=2, label=f"eta={eta:g}, alpha_p={alpha_p:g}")
        ax.semilogy(ts, np.exp(-2 * eta * ts), "--", color="k", lw=0.8)
    ax.set_xlabel("t")
    ax.set_ylabel("||Wp^T Wp - alpha_p W W^T|| (relative)")
    ax.set_title("Weight-decay balance (Sec. 3), no assumption (anisotropic X, X',\n"
                 "non-symmetric Wp, EMA); dashed: exp(-2 eta t)", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_all(out_dir, data, smoke=False):
    """Every theory PNG into ``out_dir``; returns their paths."""
    paths = {name: os.path.join(out_dir, name + ".png") for name in
             ("sec4_phase_portraits_eta", "sec4_alpha_p", "sec4_ema_beta", "sec3_alignment")}
    phase_portraits(paths["sec4_phase_portraits_eta"], smoke)
    alpha_beta(paths["sec4_alpha_p"], paths["sec4_ema_beta"], smoke)
    alignment(paths["sec3_alignment"], data["alignment"], smoke)
    return list(paths.values())
