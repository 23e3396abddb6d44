"""The decoupled per-mode dynamics (paper Sec. 3.1-3.2, Eqns. 11-16): forms, fixed
points, invariant, threshold; held against the matrix flow."""

import numpy as np
import pytest

from experiments.theory import matrix as M
from experiments.theory import modes as Q


def test_paper_form_equals_weight_form():
    rng = np.random.default_rng(0)
    p, w, tau = rng.normal(size=5), rng.uniform(0.2, 1.5, 5), rng.uniform(0.5, 1.5, 5)
    setting = Q.ModeSetting(0.4, 0.03, 1.7, beta=0.6)
    dp, ds, dtau = Q.rhs(p, w ** 2, tau, setting)
    dp2, dw, da = Q.rhs_weights(p, w, tau * w, setting)
    np.testing.assert_allclose(dp, dp2)
    np.testing.assert_allclose(ds, 2 * w * dw)
    np.testing.assert_allclose(dtau, (w * da - tau * w * dw) / w ** 2)


@pytest.mark.parametrize("beta", [None, 0.5])
@pytest.mark.parametrize("predictor", ["symmetric", "directpred"])
def test_matrix_flow_from_aligned_start_is_the_mode_flow(beta, predictor):
    s0 = np.array([0.9, 0.4, 0.1])
    p0 = np.array([0.3, -0.2, 0.5])
    X, Xa = M.covariances(3, 0.5)
    st = M.State(np.diag(np.sqrt(s0)), np.diag(p0), np.diag(np.sqrt(s0)))
    setting = M.Setting(X, Xa, eta=0.05, alpha_p=2.0, beta=beta or 1.0,
                        target="ema" if beta else "online", predictor=predictor)
    _, states = M.integrate(st, setting, 10.0, 0.01)
    mode = Q.ModeSetting(0.5, 0.05, 2.0, beta,
                         predictor="directpred" if predictor == "directpred" else "trained")
    _, p, s, _ = Q.integrate(p0, s0, mode, 10.0, 0.01)
    np.testing.assert_allclose(np.array([np.diag(x.W @ x.W.T) for x in states]), s,
                               atol=1e-9)
    np.testing.assert_allclose(np.array([np.diag(x.Wp) for x in states]), p, atol=1e-9)
    assert np.abs(s[-1] - s0).max() > 0.05  # it moved


@pytest.mark.parametrize("eta", [0.01, 0.1, 0.16])
def test_fixed_points_zero_the_rhs_and_have_the_stated_stability(eta):
    setting = Q.ModeSetting(0.5, eta, 1.5)
    fps = Q.fixed_points(setting)
    assert [k for _, _, k in fps] == ["stable", "stable", "saddle"]
    for p, s, _ in fps:
        dp, ds, _ = Q.rhs(np.array(p), np.array(s), np.array(1.0), setting)
        assert abs(dp) < 1e-12 and abs(ds) < 1e-12
    p_plus, s_plus, _ = fps[1]
    assert s_plus == pytest.approx(p_plus ** 2 / 1.5)
    # Numerical Jacobian agrees with the analytic one.
    h = 1e-6
    num = np.zeros((2, 2))
    for k, (dp_, ds_) in enumerate(((h, 0), (0, h))):
        a = Q.rhs(np.array(p_plus + dp_), np.array(s_plus + ds_), np.array(1.0), setting)
        b = Q.rhs(np.array(p_plus - dp_), np.array(s_plus - ds_), np.array(1.0), setting)
        num[:, k] = [(a[0] - b[0]) / (2 * h), (a[1] - b[1]) / (2 * h)]
    np.testing.assert_allclose(Q.jacobian(p_plus, s_plus, setting), num, atol=1e-6)


def test_threshold_separates_collapse_from_learning():
    eta_c = Q.collapse_threshold(0.5)
    assert eta_c == pytest.approx(1 / 6)
    assert len(Q.fixed_points(Q.ModeSetting(0.5, 1.01 * eta_c))) == 1
    p0 = 1 / 3  # the double root at eta_c
    _, _, s_below, _ = Q.integrate(p0, 2.0, Q.ModeSetting(0.5, 0.9 * eta_c), 400.0, 0.1)
    _, _, s_above, _ = Q.integrate(p0, 2.0, Q.ModeSetting(0.5, 1.1 * eta_c), 400.0, 0.1)
    assert s_below[-1] > 0.05 and s_above[-1] < 1e-3


@pytest.mark.parametrize("beta", [None, 0.3])
def test_invariant_parabola_when_eta_is_zero_only(beta):
    p0, s0 = np.array([-0.4, 0.2, 0.9]), np.array([0.5, 0.1, 0.6])
    _, p, s, _ = Q.integrate(p0, s0, Q.ModeSetting(0.5, 0.0, 2.0, beta), 20.0, 0.01)
    c = Q.invariant(p, s, 2.0)
    np.testing.assert_allclose(c, np.broadcast_to(c[0], c.shape), atol=1e-9)
    _, p, s, _ = Q.integrate(p0, s0, Q.ModeSetting(0.5, 0.05, 2.0, beta), 20.0, 0.01)
    c = Q.invariant(p, s, 2.0)
    assert np.abs(c - c[0]).max() > 1e-2


def test_mode_setting_rejects_unknown_predictor():
    with pytest.raises(ValueError, match="predictor"):
        Q.ModeSetting(predictor="mlp")
