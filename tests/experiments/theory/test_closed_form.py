"""The closed-form predictors' claims (experiments/theory/closed_form.py): every claim holds,
the NumPy predictors are the package's rules, and the NE identity behind the second-order
claim."""

import numpy as np
import pytest

from experiments.theory import closed_form as C


def test_claims_hold():
    claims = C.all_claims()
    ids = [c["id"] for c in claims]
    assert len(ids) == len(set(ids)) == 5
    assert all(c["holds"] for c in claims), [c["id"] for c in claims if not c["holds"]]


@pytest.mark.parametrize("kind", sorted(C.PAPER_N))
def test_theory_predictors_are_the_package_rules(kind):
    from models import predictors
    sigma, _ = C.spectral(C.SPECTRUM, seed=3)
    n = C.PAPER_N[kind]
    got = np.asarray(predictors.CLOSED_FORMS[kind](sigma, n, 0.0, C.VISSER_STEP))
    want = C.predictor(kind, sigma, n)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_ne_minus_lrp_is_the_squared_neumann_remainder():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(40, 6)) / np.sqrt(40)
    zt = z + 0.2 * rng.normal(size=(40, 6))
    g = z.T @ z
    lrp = np.linalg.solve(g, z.T @ zt)
    ne = 2 * z.T @ zt - g @ z.T @ zt
    remainder = np.eye(6) - g
    np.testing.assert_allclose(ne - lrp, -np.linalg.solve(g, remainder @ remainder @ z.T @ zt),
                               atol=1e-10)


def test_the_claims_can_fail():
    """Off the converged range (condition number 1e4) the limit claim's error is large, and
    after 5 Visser steps a null mode is still far from 1 / (eta (n + 2))."""
    far = C.limit_errors(spectrum=np.geomspace(5.0, 5e-4, 8))
    assert far["stiefel"] > 0.1 and far["ns2"] > 1e-3
    assert C.visser_null_floor(n=5) < 0.9
