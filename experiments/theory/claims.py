"""Every claim of the paper's Sec. 2-3 turned into a measured number.

``source`` cites the paper (Tian, Chen & Ganguli, ICML 2021) by section, equation,
theorem, observation ("Obs#k" of Sec. 3.2) and figure number.

Each ``claim_*`` function returns one or more dicts ``{"id", "source", "claim",
"measured", "threshold", "holds", "assumptions"}``: ``measured`` is the number,
``holds`` compares it with ``threshold`` in the stated direction, and
``assumptions`` says under which of the paper's assumptions (Sec. 3: symmetric
``Wp``, Assumption 3; ``X = I`` and isotropic ``X'``, Assumption 2) it was measured
(``"paper"``: all of them; ``"none"``: none of them; other strings name what was
dropped).
"""

from __future__ import annotations

import numpy as np

from experiments.theory import matrix as M
from experiments.theory import modes as Q

SIGMA2 = 0.5
N = 6


def _claim(cid, source, claim, measured, threshold, direction, assumptions):
    holds = measured < threshold if direction == "<" else measured > threshold
    return {"id": cid, "source": source, "claim": claim, "measured": float(measured),
            "threshold": f"{direction} {threshold:g}", "holds": bool(holds),
            "assumptions": assumptions}


def _settings(isotropic):
    return M.covariances(N, SIGMA2, isotropic=isotropic, seed=1)


# ---------------------------------------------------------------------------
# Sec. 2: the matrix flow (Lemma 1, Theorem 1).
# ---------------------------------------------------------------------------

def finite_difference_gradient(fun, x, h=1e-6):
    """Central finite differences of a scalar ``fun`` at array ``x``."""
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = h
        g[idx] = (fun(x + e) - fun(x - e)) / (2 * h)
    return g


def rhs_gradient_error(setting: M.Setting, state: M.State, h=1e-6):
    """Max relative difference between :func:`matrix.rhs` and the negative
    finite-difference gradient of ``J + eta/2 (|W|^2 + |Wp|^2)`` (``alpha_p = 1``).

    With stop-gradient ``Wa`` is held fixed (it is the target); without it
    (``online_no_sg``) ``Wa = W`` is differentiated too. For the symmetric
    predictor the gradient is projected on symmetric matrices."""
    eta = setting.eta
    s = M.effective(state, setting)

    def j_w(W):
        Wa = W if setting.target == "online_no_sg" else s.Wa
        return M.loss(M.State(W, s.Wp, Wa), setting) + 0.5 * eta * np.sum(W ** 2)

    def j_wp(Wp):
        return M.loss(M.State(s.W, Wp, s.Wa), setting) + 0.5 * eta * np.sum(Wp ** 2)

    d = M.rhs(state, setting)
    gw = -finite_difference_gradient(j_w, s.W, h)
    errs = [np.abs(d.W - gw).max() / np.abs(gw).max()]
    if setting.predictor in ("trained", "symmetric"):
        gp = -finite_difference_gradient(j_wp, s.Wp, h)
        if setting.predictor == "symmetric":
            gp = M.sym(gp)
        errs.append(np.abs(d.Wp - gp).max() / np.abs(gp).max())
    return float(max(errs))


def claim_lemma1():
    out = []
    for iso in (True, False):
        X, Xa = _settings(iso)
        err = 0.0
        for target in M.TARGETS:
            for pred in ("trained", "symmetric", "identity"):
                st = M.random_state(N, 0.7, seed=3, symmetric_wp=pred == "symmetric")
                st = M.State(st.W, st.Wp, st.Wa + 0.1)
                setting = M.Setting(X, Xa, eta=0.03, target=target, predictor=pred)
                err = max(err, rhs_gradient_error(setting, st))
        out.append(_claim(
            "lemma1_rhs_is_gradient" + ("" if iso else "_general"),
            "Sec. 2, Lemma 1 (Eqns. 2-4, from the loss of Eq. 1)",
            "dW/dt, dWp/dt are minus the gradient of J + weight decay (stop-gradient: Wa "
            "held fixed), every variant", err, 1e-6, "<",
            "paper" if iso else "none (X, X' anisotropic)"))
    return out


def claim_balance(t_end=20.0, dt=0.01):
    """``Wp^T Wp - alpha_p W W^T = exp(-2 eta t) (...)(0)`` (Theorem 1, Eq. 5)."""
    out = []
    for iso in (True, False):
        X, Xa = _settings(iso)
        for alpha_p in (1.0, 3.0):
            eta = 0.05
            setting = M.Setting(X, Xa, eta=eta, alpha_p=alpha_p, beta=0.5, target="ema")
            st = M.random_state(N, 0.6, seed=4)
            ts, states = M.integrate(st, setting, t_end, dt)
            b0 = M.balance(states[0], alpha_p)
            dev = max(np.linalg.norm(M.balance(s, alpha_p) - np.exp(-2 * eta * t) * b0)
                      for t, s in zip(ts, states)) / np.linalg.norm(b0)
            tag = "" if alpha_p == 1.0 else "_alpha_p3"
            out.append(_claim(
                "balance_weight_decay" + tag + ("" if iso else "_general"),
                "Sec. 2, Theorem 1 (Eq. 5), weight decay balances Wp and W"
                + (f", alpha_p = {alpha_p:g}" if alpha_p != 1 else ""),
                f"Wp^T Wp - {alpha_p:g} W W^T decays exactly as exp(-2 eta t) "
                "(max deviation relative to its initial norm; EMA, non-symmetric Wp)",
                dev, 1e-6, "<", "symmetric Wp not needed" + ("" if iso else "; none")))
        # The symmetrised predictor flow (the paper's Assumption 3) from a
        # start that is not aligned: the balance is no longer exact.
        setting = M.Setting(X, Xa, eta=0.05, alpha_p=1.0, beta=0.5, predictor="symmetric")
        ts, states = M.integrate(M.random_state(N, 0.6, seed=4, symmetric_wp=True), setting,
                                 t_end, dt)
        b0 = M.balance(states[0])
        dev = max(np.linalg.norm(M.balance(s) - np.exp(-2 * 0.05 * t) * b0)
                  for t, s in zip(ts, states)) / np.linalg.norm(b0)
        out.append(_claim(
            "balance_symmetrised_flow" + ("" if iso else "_general"),
            "Theorem 1 (Eq. 5) under Assumption 3 (symmetrised Wp flow, Eq. 7)",
            "with dWp/dt symmetrised (symmetric Wp), from a non-aligned start: "
            "Wp^2 - W W^T vs exp(-2 eta t) (max relative deviation)", dev, 1e-6, "<",
            "symmetric Wp imposed" + ("" if iso else "; X, X' anisotropic")))
    return out


def claim_invariant_matrix(t_end=20.0, dt=0.01):
    X, Xa = _settings(False)
    setting = M.Setting(X, Xa, eta=0.0, alpha_p=2.0, target="online")
    st = M.random_state(N, 0.6, seed=5)
    ts, states = M.integrate(st, setting, t_end, dt)
    b0 = M.balance(states[0], 2.0)
    dev = max(np.linalg.norm(M.balance(s, 2.0) - b0) for s in states) / np.linalg.norm(b0)
    moved = np.linalg.norm(states[-1].W - states[0].W) / np.linalg.norm(states[0].W)
    return [_claim("invariant_eta0_matrix", "Sec. 2, Theorem 1 (Eq. 5) at eta = 0",
                   "with eta = 0, Wp^T Wp - alpha_p W W^T is conserved "
                   f"(relative drift; W itself moved by {moved:.2f})", dev, 1e-6, "<",
                   "none")]


# ---------------------------------------------------------------------------
# Sec. 3.1-3.2: the decoupled dynamics (Eqns. 11-17).
# ---------------------------------------------------------------------------

def claim_decoupling(t_end=20.0, dt=0.01):
    """The matrix flow from an aligned start equals the per-mode flow."""
    X, Xa = M.covariances(4, SIGMA2)
    s0 = np.array([0.8, 0.4, 0.2, 0.05])
    p0 = np.array([0.3, 0.1, -0.1, 0.5])
    st = M.State(np.diag(np.sqrt(s0)), np.diag(p0), np.diag(np.sqrt(s0)))
    dev = 0.0
    for beta in (None, 0.5):
        setting = M.Setting(X, Xa, eta=0.05, alpha_p=2.0, beta=beta or 1.0,
                            target="ema" if beta else "online", predictor="symmetric")
        _, states = M.integrate(st, setting, t_end, dt)
        _, p, s, _ = Q.integrate(p0, s0, Q.ModeSetting(SIGMA2, 0.05, 2.0, beta), t_end, dt)
        pm = np.array([np.diag(x.Wp) for x in states])
        sm = np.array([np.diag(x.W @ x.W.T) for x in states])
        dev = max(dev, np.abs(pm - p).max() / np.abs(p).max(),
                  np.abs(sm - s).max() / np.abs(s).max())
    return [_claim("decoupled_dynamics", "Sec. 3.1, decoupled dynamics (Eqns. 11-13)",
                   "matrix flow from an aligned start (Wa = W) equals the (p_j, s_j, tau_j) "
                   "system, SimSiam and EMA (max relative deviation)", dev, 1e-8, "<",
                   "paper")]


def claim_invariant_parabola(t_end=30.0, dt=0.01):
    p0 = np.array([-0.4, 0.0, 0.2, 0.8])
    s0 = np.array([0.5, 0.2, 0.1, 0.6])
    dev = 0.0
    for beta in (None, 0.3):
        setting = Q.ModeSetting(SIGMA2, 0.0, 2.0, beta)
        _, p, s, _ = Q.integrate(p0, s0, setting, t_end, dt)
        c = Q.invariant(p, s, 2.0)
        dev = max(dev, np.abs(c - c[0]).max() / np.abs(s).max())
    return [_claim("invariant_parabola", "Sec. 3.2, Eq. 14 at eta = 0 (Fig. 3, left)",
                   "per-mode invariant parabola, SimSiam and EMA (max drift / max s)",
                   dev, 1e-8, "<", "paper")]


def claim_fixed_points():
    err, kinds_ok = 0.0, True
    for eta in (0.02, 0.1, 0.15):
        setting = Q.ModeSetting(SIGMA2, eta, 1.5)
        fps = Q.fixed_points(setting)
        for p, s, _ in fps:
            dp, ds, _ = Q.rhs(np.array(p), np.array(s), np.array(1.0), setting)
            err = max(err, abs(float(dp)), abs(float(ds)))
        kinds_ok &= [k for _, _, k in fps] == ["stable", "stable", "saddle"]
    out = [_claim("fixed_points", "Sec. 3.2, fixed points p*_{j+-} of Eq. 16 "
                  "on s = p^2 / alpha_p (Eq. 14), tau = 1",
                  "the analytic fixed points zero the right-hand side (max |rhs|)",
                  err, 1e-12, "<", "paper")]
    out.append(_claim("fixed_point_stability", "Sec. 3.2, Fig. 4(b)",
                      "(0, 0) and the larger root stable, the smaller root a saddle "
                      "(1 = all three eta values)", float(kinds_ok), 0.5, ">", "paper"))
    # A generic start converges to the stable non-trivial point.
    setting = Q.ModeSetting(SIGMA2, 0.05, 1.0)
    p_plus, s_plus, _ = Q.fixed_points(setting)[1]
    _, p, s, _ = Q.integrate(0.3, 0.5, setting, 200.0, 0.05)
    dev = max(abs(p[-1] - p_plus) / p_plus, abs(s[-1] - s_plus) / s_plus)
    out.append(_claim("fixed_point_reached", "Sec. 3.2, stable fixed point p*_{j+}",
                      "from (p, s) = (0.3, 0.5), eta = 0.05: relative distance to (p+, s+) "
                      "at t = 200", dev, 1e-6, "<", "paper"))
    return out


def measured_threshold(sigma2=SIGMA2, alpha_p=1.0, n=401, t_end=2000.0, dt=0.1):
    """The largest ``eta`` whose trajectory from a favourable start
    (``p0 = 1 / (2 (1 + sigma2))``, ``s0 = 2``) ends non-collapsed, on a grid
    over ``[0.5, 1.5] x`` the analytic threshold."""
    eta_c = Q.collapse_threshold(sigma2)
    etas = np.linspace(0.5 * eta_c, 1.5 * eta_c, n)
    p0 = np.full(n, 1.0 / (2 * (1 + sigma2)))
    s0 = np.full(n, 2.0)
    # eta varies along the array: integrate each with its own eta (vectorised).
    setting = Q.ModeSetting(sigma2, etas, alpha_p)
    _, _, s, _ = Q.integrate(p0, s0, setting, t_end, dt, n_records=1)
    alive = s[-1] > 1e-3
    return float(etas[alive].max()) if alive.any() else 0.0, eta_c


def claim_threshold(smoke=False):
    measured, eta_c = measured_threshold(n=41 if smoke else 401,
                                         t_end=100.0 if smoke else 2000.0)
    return [_claim("collapse_threshold", "Sec. 3.2, Obs#5 and Fig. 4(c): no "
                   "non-trivial fixed point for eta > tau^2 / (4 (1 + sigma2))",
                   f"measured largest surviving eta vs analytic {eta_c:.4f} "
                   "(relative error; grid step 0.25%)", abs(measured - eta_c) / eta_c,
                   0.02 if smoke else 0.005, "<", "paper")]


def collapse_fraction(setting: Q.ModeSetting, n=60, t_end=200.0, dt=0.1,
                      p_range=(-1.0, 1.2), s_range=(0.01, 1.5)):
    """Fraction of a grid of starts ``(p0, s0)`` whose mode collapses
    (``s(t_end) < 1e-3``); also returns the grid and the mask."""
    pg, sg = np.meshgrid(np.linspace(*p_range, n), np.linspace(*s_range, n))
    _, _, s, _ = Q.integrate(pg, sg, setting, t_end, dt, n_records=1)
    mask = s[-1] < 1e-3
    return float(mask.mean()), pg, sg, mask


def claim_hyperparameters(smoke=False):
    n = 10 if smoke else 60
    t_end = 20.0 if smoke else 200.0
    etas = (0.02, 0.05, 0.08, 0.12, 0.15)
    f_eta = [collapse_fraction(Q.ModeSetting(SIGMA2, e, 1.0), n, t_end)[0] for e in etas]
    f_eta0 = collapse_fraction(Q.ModeSetting(SIGMA2, 0.0, 1.0), n, t_end)[0]
    alphas = (0.5, 1.0, 2.0, 5.0)
    f_alpha = [collapse_fraction(Q.ModeSetting(SIGMA2, 0.05, a), n, t_end)[0]
               for a in alphas]
    betas = (None, 2.0, 0.5, 0.1)
    f_beta = [collapse_fraction(Q.ModeSetting(SIGMA2, 0.05, 1.0, b), n, t_end)[0]
              for b in betas]
    mono = lambda f, sign: float(np.all(sign * np.diff(f) >= -1e-12))
    out = [
        _claim("weight_decay_enlarges_collapse",
               "Sec. 3.2, Obs#4 (p*_{j-} grows with eta; App. B.2)",
               "for eta > 0 the fraction of starts that collapse grows with eta "
               f"(eta = 0: {f_eta0:.3f}; eta {etas}: {np.round(f_eta, 3).tolist()}); measured: last - first",
               f_eta[-1] - f_eta[0], 0.0, ">", "paper"),
        _claim("alpha_p_shrinks_collapse",
               "Sec. 3.2, Obs#1 (larger alpha_p flattens the parabola; cf. Fig. 6)",
               "fraction of starts that collapse falls as alpha_p grows "
               f"(alpha_p {alphas}: {np.round(f_alpha, 3).tolist()}, eta = 0.05); "
               "measured: first - last", f_alpha[0] - f_alpha[-1], 0.0, ">", "paper"),
        _claim("ema_beta_basin",
               "Sec. 3.2, EMA rate beta (cf. Obs#10, which is about a small tau)",
               "a slower EMA does not enlarge the collapse region; it barely changes it "
               f"(beta inf, 2, 0.5, 0.1: {np.round(f_beta, 3).tolist()}, eta = 0.05, "
               "tau_j(0) = 1); measured: first - last", f_beta[0] - f_beta[-1], -1e-9, ">",
               "paper"),
    ]
    out += claim_ema_speed(smoke)
    return out, {"eta": (etas, f_eta), "alpha_p": (alphas, f_alpha),
                 "beta": ([str(b) for b in betas], f_beta), "monotone": {
                     "eta": mono(f_eta, 1), "alpha_p": mono(f_alpha, -1),
                     "beta": mono(f_beta, -1)}}


def time_to_learn(setting, p0=0.1, s0=0.1, t_end=400.0, dt=0.05, frac=0.9):
    """First time ``s`` reaches ``frac`` of the stable ``s+`` from ``(p0, s0)``, and
    the final ``(p, s, tau)``."""
    t, p, s, tau = Q.integrate(p0, s0, setting, t_end, dt, n_records=int(t_end / dt))
    s_plus = Q.fixed_points(Q.ModeSetting(setting.sigma2, setting.eta, setting.alpha_p))[1][1]
    hit = np.nonzero(s >= frac * s_plus)[0]
    return (float(t[hit[0]]) if len(hit) else np.inf), (p[-1], s[-1], tau[-1]), s_plus


def claim_ema_speed(smoke=False):
    t_end = 100.0 if smoke else 400.0
    times, finals = [], []
    for beta in (None, 1.0, 0.3, 0.1):
        t90, final, s_plus = time_to_learn(Q.ModeSetting(SIGMA2, 0.05, 1.0, beta),
                                           t_end=t_end)
        times.append(t90)
        finals.append(final)
    p_plus = Q.fixed_points(Q.ModeSetting(SIGMA2, 0.05, 1.0))[1][0]
    dev = max(max(abs(p - p_plus) / p_plus, abs(s - s_plus) / s_plus, abs(tau - 1.0))
              for p, s, tau in finals)
    return [
        _claim("ema_slows_learning", "Sec. 3.2, Obs#9 (Fig. 5, bottom row)",
               "a slower EMA makes a mode learn more slowly: time for s to reach 90% of "
               f"s+ from (0.1, 0.1), beta inf, 1, 0.3, 0.1: {np.round(times, 1).tolist()}; "
               "measured: t(0.1) / t(inf)", times[-1] / times[0], 1.0, ">", "paper"),
        _claim("ema_same_fixed_point",
               "Sec. 3.2, EMA: tau -> 1, BYOL ends at SimSiam's fixed point",
               "with EMA the mode ends at SimSiam's (p+, s+) with tau = 1 (max relative "
               f"deviation over beta 1, 0.3, 0.1 at t = {t_end:g})", dev,
               0.05 if smoke else 1e-4, "<", "paper"),
    ]


# ---------------------------------------------------------------------------
# Sec. 2-3: stop-gradient (Theorem 2), predictor, eigenspace alignment (Theorem 3),
# with and without the assumptions.
# ---------------------------------------------------------------------------

def claim_ablations(t_end=200.0, dt=0.02):
    out = []
    for iso in (True, False):
        X, Xa = _settings(iso)
        st = M.random_state(N, 1.0, seed=6, symmetric_wp=True)
        base = M.Setting(X, Xa, eta=0.01, target="online", predictor="trained")
        norms = {}
        for name, setting in (
                ("sg", base),
                ("no_sg", M.Setting(X, Xa, eta=0.01, target="online_no_sg")),
                ("no_pred", M.Setting(X, Xa, eta=0.01, target="online",
                                      predictor="identity"))):
            _, states = M.integrate(st, setting, t_end, dt, record_every=t_end)
            norms[name] = np.linalg.norm(states[-1].W) / np.linalg.norm(states[0].W)
        tag = "" if iso else "_general"
        a = "paper" if iso else "none (X, X' anisotropic)"
        out.append(_claim("stop_gradient_essential" + tag, "Sec. 2, Theorem 2 (Eq. 6)",
                          "without stop-gradient W -> 0 (|W(T)| / |W(0)|; with it: "
                          f"{norms['sg']:.3f})", norms["no_sg"], 1e-3, "<", a))
        out.append(_claim("predictor_essential" + tag,
                          "Sec. 2, after Theorem 2 (no predictor, Wp = I)",
                          "without predictor (Wp = I) W -> 0 (|W(T)| / |W(0)|)",
                          norms["no_pred"], 1e-3, "<", a))
        out.append(_claim("with_sg_and_predictor_learns" + tag, "Sec. 2-3",
                          "with stop-gradient and predictor W does not collapse "
                          "(|W(T)| / |W(0)|)", norms["sg"], 0.1, ">", a))
    return out


ALIGNMENT_CASES = (
    # (label, isotropic, symmetric predictor, eta)
    ("paper assumptions (symmetric Wp, X = I, X' = sigma2 I)", True, True, 0.02),
    ("non-symmetric Wp, X = I", True, False, 0.02),
    ("symmetric Wp, anisotropic X, X'", False, True, 0.02),
    ("no assumption", False, False, 0.02),
    ("paper assumptions, eta = 0", True, True, 0.0),
)


def alignment_runs(t_end=300.0, dt=0.02):
    """Commutators ``[Wp, F]`` (``F = W X W^T``) over time for each case."""
    runs = []
    for label, iso, symmetric, eta in ALIGNMENT_CASES:
        X, Xa = _settings(iso)
        st = M.random_state(N, 0.8, seed=7, symmetric_wp=symmetric)
        setting = M.Setting(X, Xa, eta=eta, alpha_p=1.0, beta=1.0, target="ema",
                            predictor="symmetric" if symmetric else "trained")
        ts, states = M.integrate(st, setting, t_end, dt, record_every=t_end / 150)
        comm = np.array([M.commutator(s.Wp, M.correlation(s, X)) for s in states])
        comm_z = np.array([M.commutator(s.Wp, M.correlation(s, X + Xa)) for s in states])
        comm_ww = np.array([M.commutator(s.Wp, s.W @ s.W.T) for s in states])
        asym = np.array([np.linalg.norm(s.Wp - s.Wp.T) / np.linalg.norm(s.Wp) for s in states])
        wnorm = np.array([np.linalg.norm(s.W) for s in states])
        runs.append({"label": label, "times": ts, "commutator": comm,
                     "commutator_z": comm_z, "commutator_ww": comm_ww, "asymmetry": asym,
                     "w_norm": wnorm, "eta": eta})
    return runs


def claim_alignment(runs):
    out = []
    ids = ("alignment_paper", "alignment_nonsymmetric", "alignment_anisotropic",
           "alignment_none", "alignment_eta0")
    for cid, run in zip(ids, runs):
        final = float(run["commutator"][-1])
        start = float(run["commutator"][0])
        out.append(_claim(
            cid, "Sec. 3.1, Theorem 3 (Eqns. 8-10; cf. Fig. 9, Fig. 2)"
            + ("; Wp - Wp^T -> 0: Fig. 8" if cid == "alignment_nonsymmetric" else ""),
            f"{run['label']}: ||[Wp, F]|| / (||Wp|| ||F||) at t = {run['times'][-1]:g} "
            f"(from {start:.3f}; |W| = {run['w_norm'][-1]:.2f}; with W W^T instead of F: "
            f"{run['commutator_ww'][-1]:.2g}; with F_z = W (X + X') W^T: "
            f"{run['commutator_z'][-1]:.2g}; ||Wp - Wp^T|| / ||Wp||: "
            f"{run['asymmetry'][-1]:.2g})", final, 1e-3, "<", run["label"]))
    # Without X = I the alignment that survives is the one with W W^T (the balance).
    run = runs[3]
    out.append(_claim(
        "alignment_with_WWT_no_assumption",
        "Theorem 1 (Eq. 5) => alignment with W W^T (our reading)",
        f"{run['label']}: ||[Wp, W W^T]|| / (||Wp|| ||W W^T||) at t = {run['times'][-1]:g}",
        float(run["commutator_ww"][-1]), 1e-3, "<", run["label"]))
    return out


def all_claims(smoke=False):
    """Every claim (list of dicts), plus the data the figures reuse."""
    claims = []
    claims += claim_lemma1()
    claims += claim_balance(t_end=5.0 if smoke else 20.0)
    claims += claim_invariant_matrix(t_end=5.0 if smoke else 20.0)
    claims += claim_decoupling(t_end=5.0 if smoke else 20.0)
    claims += claim_invariant_parabola(t_end=5.0 if smoke else 30.0)
    claims += claim_fixed_points()
    claims += claim_threshold(smoke)
    hyper, fractions = claim_hyperparameters(smoke)
    claims += hyper
    claims += claim_ablations(t_end=10.0 if smoke else 200.0, dt=0.05 if smoke else 0.02)
    runs = alignment_runs(t_end=10.0 if smoke else 300.0, dt=0.05 if smoke else 0.02)
    claims += claim_alignment(runs)
    return claims, {"fractions": fractions, "alignment": runs}
