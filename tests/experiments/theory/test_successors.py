"""The successors' linear theory (experiments/theory/successors.py): right-hand sides against
finite differences, the predicted shares, and the package's train step with DirectSet and
IsoLoss against the ODE."""

import dataclasses

import numpy as np
import pytest

from experiments.theory import matrix as M
from experiments.theory import successors as S


@pytest.mark.parametrize("loss", M.LOSSES)
@pytest.mark.parametrize("beta", [None, 0.5])
@pytest.mark.parametrize("eps_at", ["after_power", "before_power"])
def test_mode_rhs_is_minus_the_finite_difference_gradient(loss, beta, eps_at):
    setting = S.SetSetting(S.SIGMA2, 0.07, 0.6, 0.1, eps_at, loss, beta)
    rng = np.random.default_rng(0)
    w = rng.uniform(0.2, 1.0, len(S.SIGMA2))
    assert S.rhs_fd_error(setting, w, 1.1 * w) < 1e-6
    # The check can fail: the other loss's right-hand side does not match.
    other = dataclasses.replace(setting, loss="iso" if loss == "euclidean" else "euclidean")
    p = S.predictor(w, setting)
    index = 1 if loss == "iso" else 0
    a = w if beta is None else 1.1 * w
    fd = -np.array([(S.mode_losses(w + 1e-6, w, a, p, setting.c)[index]
                     - S.mode_losses(w - 1e-6, w, a, p, setting.c)[index]) / 2e-6])[0]
    assert np.abs(S.rhs(w, a, other)[0] + setting.eta * w - fd).max() > 1e-3


def test_matrix_iso_flow_is_the_euclidean_flow_without_wp_transpose():
    X, Xa = M.covariances(4, 0.5, isotropic=False, seed=0)
    st = M.random_state(4, 0.7, seed=1)
    e = M.Setting(X, Xa, eta=0.1, target="online", predictor="directset", directset_alpha=1.0,
                  directpred_eps=0.25)
    i = dataclasses.replace(e, loss="iso")
    eff = M.effective(st, e)
    g = -eff.Wp @ eff.W @ (X + Xa) + eff.W @ X
    np.testing.assert_allclose(M.rhs(st, i).W, g - 0.1 * st.W, atol=1e-12)
    np.testing.assert_allclose(M.rhs(st, e).W, eff.Wp.T @ g - 0.1 * st.W, atol=1e-12)
    # DirectSet(1/2) with eps after the power is DirectPred's predictor.
    half = dataclasses.replace(e, directset_alpha=0.5, directset_eps_at="after_power",
                               directpred_eps=0.1)
    np.testing.assert_allclose(M.effective(st, half).Wp,
                               M.directpred_predictor(st.W, X + Xa, 0.1), atol=1e-12)


def test_predicted_shares_match_the_integrated_flow_and_claims_hold():
    runs = S.share_runs(t_end=150.0, dt=0.05)
    for r in runs:
        np.testing.assert_allclose(r["shares"][-1], r["predicted"], atol=1e-3)
    claims, _ = S.all_claims(smoke=True)
    ids = [c["id"] for c in claims]
    assert len(ids) == len(set(ids)) == 7
    exact = {"successors_mode_rhs_fd", "successors_decoupling",
             "isoloss_eigenvalue_rate_multiplier", "isoloss_recruits_small_modes_faster"}
    assert all(c["holds"] for c in claims if c["id"] in exact)
