"""The matrix flow of the linear model (paper Sec. 2, Lemma 1) against finite
differences and Monte Carlo: pure NumPy."""

import numpy as np
import pytest

from experiments.theory import claims as C
from experiments.theory import matrix as M


@pytest.mark.parametrize("isotropic", [True, False])
@pytest.mark.parametrize("target", M.TARGETS)
@pytest.mark.parametrize("predictor", ["trained", "symmetric", "identity"])
def test_rhs_is_minus_finite_difference_gradient(isotropic, target, predictor):
    X, Xa = M.covariances(4, 0.5, isotropic=isotropic, seed=2)
    st = M.random_state(4, 0.8, seed=1, symmetric_wp=predictor == "symmetric")
    st = M.State(st.W, st.Wp, st.Wa + 0.2)  # a target different from W (EMA)
    setting = M.Setting(X, Xa, eta=0.07, target=target, predictor=predictor)
    assert C.rhs_gradient_error(setting, st) < 1e-6


def test_finite_difference_check_catches_a_wrong_rhs(monkeypatch):
    X, Xa = M.covariances(3, 0.5, isotropic=False)
    st = M.random_state(3, 0.8, seed=1)
    setting = M.Setting(X, Xa, eta=0.0)
    good = M.rhs

    def wrong(state, s):  # X instead of X + X' in the predictor term
        d = good(state, s)
        return M.State(d.W + state.Wp.T @ state.Wp @ state.W @ s.X_aug, d.Wp, d.Wa)

    monkeypatch.setattr(M, "rhs", wrong)
    assert C.rhs_gradient_error(setting, st) > 1e-2


def test_closed_form_loss_matches_monte_carlo():
    rng = np.random.default_rng(0)
    X, Xa = M.covariances(3, 0.5, isotropic=False, seed=3)
    st = M.random_state(3, 1.0, seed=2)
    st = M.State(st.W, st.Wp, st.Wa + 0.3)
    n = 400_000
    lx, la = np.linalg.cholesky(X), np.linalg.cholesky(Xa)
    xbar = rng.standard_normal((n, 3)) @ lx.T
    x1 = xbar + rng.standard_normal((n, 3)) @ la.T
    x2 = xbar + rng.standard_normal((n, 3)) @ la.T
    r = x1 @ (st.Wp @ st.W).T - x2 @ st.Wa.T
    mc = 0.5 * np.mean(np.sum(r ** 2, axis=1))
    assert M.loss(st, M.Setting(X, Xa)) == pytest.approx(mc, rel=1e-2)


@pytest.mark.parametrize("alpha_p", [1.0, 2.5])
def test_balance_decays_as_exp_minus_2_eta_t(alpha_p):
    X, Xa = M.covariances(4, 0.5, isotropic=False, seed=1)
    eta = 0.08
    setting = M.Setting(X, Xa, eta=eta, alpha_p=alpha_p, beta=0.7)
    ts, states = M.integrate(M.random_state(4, 0.6, seed=4), setting, 5.0, 0.01)
    b0 = M.balance(states[0], alpha_p)
    for t, s in zip(ts, states):
        np.testing.assert_allclose(M.balance(s, alpha_p), np.exp(-2 * eta * t) * b0,
                                   atol=1e-6 * np.abs(b0).max())  # RK4, dt = 0.01
    # ... and not with another alpha_p in the balance (the test can fail).
    b_wrong = [np.linalg.norm(M.balance(s, alpha_p + 1) - np.exp(-2 * eta * t)
                              * M.balance(states[0], alpha_p + 1)) for t, s in zip(ts, states)]
    assert max(b_wrong) > 1e-3


def test_directpred_predictor_matches_eigen_formula():
    X, Xa = M.covariances(3, 0.5, isotropic=False, seed=5)
    W = M.random_state(3, 1.0, seed=3).W
    wp = M.directpred_predictor(W, X + Xa, eps=0.1)
    f = W @ (X + Xa) @ W.T
    s, u = np.linalg.eigh(f)
    for j in range(3):
        assert u[:, j] @ wp @ u[:, j] == pytest.approx(np.sqrt(s[j] / s.max()) + 0.1)
    np.testing.assert_allclose(wp, wp.T, atol=1e-12)


def test_setting_rejects_unknown_variant():
    X, Xa = M.covariances(2)
    with pytest.raises(ValueError, match="target"):
        M.Setting(X, Xa, target="momentum")
    with pytest.raises(ValueError, match="predictor"):
        M.Setting(X, Xa, predictor="mlp")
    with pytest.raises(ValueError, match="X_aug"):
        M.Setting(X, np.eye(3))


def test_no_stop_gradient_collapses_and_stop_gradient_learns():
    X, Xa = M.covariances(3, 0.5, isotropic=False, seed=1)
    st = M.random_state(3, 1.0, seed=6, symmetric_wp=True)
    norms = {}
    for target in ("online", "online_no_sg"):
        _, states = M.integrate(st, M.Setting(X, Xa, eta=0.01, target=target), 60.0, 0.05,
                                record_every=60.0)
        norms[target] = np.linalg.norm(states[-1].W) / np.linalg.norm(states[0].W)
    assert norms["online_no_sg"] < 1e-3 < 0.1 < norms["online"]
