"""The closed-form predictors of Richemond et al. (ICML 2023, arXiv 2302.04817;
docs/successors.md) against NumPy references: each iteration written plainly in float64, and
its limit matrix function by eigendecomposition; the ridge, the rule bound by the config,
refused options, a TF train step (with the EMA of Wp), and JAX equal to TF."""

import json

import keras
import numpy as np
import pytest

from config import Config, get_config
from experiments.theory.closed_form import matrix_function, spectral
from models import SiameseNetwork, build_optimizer, predictors
from tests.models.conftest import tiny_config
from tests.models.jax_subprocess import jax_available, run_jax_worker

FACTORIES = ("closed_form_ns", "closed_form_ns2", "closed_form_stiefel", "closed_form_visser")


# ---- the iterations, written plainly in float64 (Sec. 4.3, Eqs. 8-10; Sec. 5.2) ----

def np_newton_schulz(m, n):
    a, b, eye = m / np.linalg.norm(m), np.eye(len(m)), np.eye(len(m))
    for _ in range(n):
        a, b = 0.5 * a @ (3 * eye - b @ a), 0.5 * (3 * eye - b @ a) @ b
    return a, b, np.linalg.norm(m)


def np_ns(corr, n, ridge=0.0):
    a, _, norm = np_newton_schulz(corr, n)
    return a * np.sqrt(norm) + ridge * np.eye(len(corr))


def np_ns2(corr, n, ridge=0.0):
    return np_ns(np_ns(corr, n), n, ridge)


def np_stiefel(corr, n, ridge=0.0):
    _, b, _ = np_newton_schulz(corr.T @ corr, n)
    return b @ corr.T / np.linalg.norm(b) + ridge * np.eye(len(corr))


def np_visser(corr, n, step, ridge=0.0):
    norm = np.linalg.norm(corr)
    p = np.eye(len(corr)) / (2 * step)
    for _ in range(n):
        p = p + step * (corr / norm - p @ p)
    return np.sqrt(norm) * p + ridge * np.eye(len(corr))


REFERENCES = {"newton_schulz": lambda f, n, r: np_ns(f, n, r),
              "ns2": lambda f, n, r: np_ns2(f, n, r),
              "stiefel": lambda f, n, r: np_stiefel(f, n, r),
              "visser": lambda f, n, r: np_visser(f, n, 0.5, r)}
#: A correlation with condition number 16 (4 ... 0.25): every iteration below converges on it.
CORR, BASIS = spectral([4.0, 2.0, 1.0, 0.5, 0.25])


@pytest.mark.parametrize("kind", sorted(REFERENCES))
@pytest.mark.parametrize("n", [1, 7, 9])
def test_rule_is_its_iteration(kind, n):
    """float32 keras.ops vs float64 NumPy, n iterations, ridge 0.3: within 1e-5 of the
    largest entry."""
    got = np.asarray(predictors.CLOSED_FORMS[kind](CORR, n, 0.3, 0.5))
    want = REFERENCES[kind](CORR, n, 0.3)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())


def test_iterations_reach_their_matrix_functions():
    """Limits by eigendecomposition, at enough iterations (relative error < 1e-5): NS and
    Visser -> F^{1/2}, NS^2 -> F^{1/4}; Stiefel -> the polar factor of F divided by
    ||(F^T F)^{-1/2}||_F (F symmetric and indefinite here, so the factor is U sign(s) U^T)."""
    def close(got, want):
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5 * np.abs(want).max())

    close(predictors.newton_schulz_weights(CORR, 15), matrix_function(CORR, np.sqrt))
    close(predictors.visser_weights(CORR, 200, 0.2), matrix_function(CORR, np.sqrt))
    close(predictors.newton_schulz_squared_weights(CORR, 15),
          matrix_function(CORR, lambda s: s ** 0.25))
    signed, _ = spectral([3.0, -1.5, 1.0, 0.7, -2.0], seed=1)
    polar = matrix_function(signed, np.sign)
    scale = np.linalg.norm(matrix_function(signed, lambda s: 1 / np.abs(s)))
    close(predictors.stiefel_weights(signed, 20), polar / scale)


def test_stiefel_is_a_scaled_projection_onto_the_range():
    """A rank-3 PSD F in 5 dimensions: B F is 0 on the null space, flat on the range (float32
    vs float64 within 1e-4 of the top eigenvalue: B grows as 1.5^n on the null space)."""
    corr, q = spectral([2.0, 1.0, 0.7, 0.0, 0.0], seed=2)
    wp = np.asarray(predictors.stiefel_weights(corr, 12), np.float64)
    projection = q[:, :3] @ q[:, :3].T
    top = np.linalg.eigvalsh(wp).max()
    np.testing.assert_allclose(wp / top, projection, atol=1e-4)
    np.testing.assert_allclose(wp, np_stiefel(corr, 12), atol=1e-4 * top)


def test_directset_up_to_scale_in_the_eigenbasis():
    """Converged (n = 15): NS = sqrt(s_max) DirectSet(1/2), NS^2 = s_max^{1/4} DirectSet(1/4),
    Stiefel of a full-rank PSD F = I / ||F^{-1}||_F (DirectSet(0)), eps 0 (within 1e-5)."""
    s_max = 4.0
    for fn, scale, alpha in ((predictors.newton_schulz_weights, np.sqrt(s_max), 0.5),
                             (predictors.newton_schulz_squared_weights, s_max ** 0.25, 0.25)):
        want = scale * np.asarray(predictors.direct_set_weights(CORR, alpha, 0.0, "after_power"))
        np.testing.assert_allclose(np.asarray(fn(CORR, 15)), want, atol=1e-5 * scale)
    scale = 1 / np.linalg.norm(np.linalg.inv(CORR))
    np.testing.assert_allclose(np.asarray(predictors.stiefel_weights(CORR, 20)),
                               scale * np.eye(5), atol=1e-5 * scale)


def test_visser_converges_at_every_scale_of_f_below_its_step_bound():
    """Eq. 8's map p -> p + eta (s - p^2) has slope 1 - 2 eta sqrt(s) at sqrt(s); on
    F / ||F||_F (eigenvalues <= 1) eta 0.5 converges whatever F's scale (1 and 1e4 here:
    F's top eigenvalue reaches 1e5 in a CIFAR run), eta 3 (3 sqrt(s_max) > 1) does not."""
    for scale in (1.0, 1e4):
        good = np.asarray(predictors.visser_weights(CORR * scale, 100, 0.5), dtype=float)
        want = matrix_function(CORR * scale, np.sqrt)
        np.testing.assert_allclose(good, want, atol=1e-5 * np.abs(want).max())
    bad = np.asarray(predictors.visser_weights(CORR, 100, 3.0))
    assert not np.allclose(bad, matrix_function(CORR, np.sqrt), atol=1.0)


def test_lrp_and_ne_are_their_formulas():
    """LRP (Eq. 4) = the least-squares solution; NE (Eq. 6) = 2 Z^T Z' - Z^T Z Z^T Z'."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(32, 5)) * 0.2
    zt = z + 0.05 * rng.normal(size=(32, 5))
    lrp = np.linalg.lstsq(z, zt, rcond=None)[0]
    np.testing.assert_allclose(np.asarray(predictors.linear_regression_predictor(z, zt)), lrp,
                               atol=1e-5)
    ne = 2 * z.T @ zt - z.T @ z @ z.T @ zt
    np.testing.assert_allclose(np.asarray(predictors.neumann_predictor(z, zt)), ne,
                               atol=1e-5 * np.abs(ne).max())


def test_every_config_choice_has_a_rule():
    from config import groups
    assert set(predictors.CLOSED_FORMS) == set(groups.CLOSED_FORMS) == set(REFERENCES)
    assert {get_config(name).closed_form for name in FACTORIES} == set(groups.CLOSED_FORMS)


@pytest.mark.parametrize("name", FACTORIES)
def test_rule_from_config(name):
    config = get_config(name)
    kind, n, ridge = config.closed_form, config.closed_form_iterations, config.closed_form_ridge
    want = REFERENCES[kind](CORR, n, ridge)
    got = np.asarray(predictors.predictor_rule(config)(CORR))
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    # The ridge is alpha I on top of the iteration.
    plain = np.asarray(predictors.predictor_rule(config.replace(closed_form_ridge=0.0))(CORR))
    np.testing.assert_allclose(got - plain, ridge * np.eye(5), atol=1e-5 * np.abs(want).max())


def test_options_are_refused_where_unused():
    with pytest.raises(ValueError, match=r"^Config.closed_form_ridge applies to "
                       r"predictor='closed_form' only.*Received: closed_form_ridge=0.5$"):
        get_config("direct_pred", closed_form_ridge=0.5)
    for field, value in (("closed_form", "ns2"), ("closed_form_iterations", 3),
                         ("closed_form_ema", 0.9)):
        with pytest.raises(ValueError, match=f"Config.{field} applies to predictor="):
            get_config("byol", **{field: value})
    with pytest.raises(ValueError, match=r"visser_step applies to closed_form='visser' only"):
        get_config("closed_form_ns", visser_step=0.2)
    with pytest.raises(ValueError, match=r"predictor_eps applies to predictor="):
        get_config("closed_form_stiefel", predictor_eps=0.2)
    for field, value, rule in (("closed_form", "lrp", "one of"),
                               ("closed_form_iterations", 0, "an integer >= 1"),
                               ("closed_form_iterations", 2.5, "an integer >= 1"),
                               ("closed_form_ridge", -0.1, ">= 0"),
                               ("closed_form_ema", 1.0, r"in \[0, 1\)"),
                               ("visser_step", 0.0, "> 0")):
        with pytest.raises(ValueError, match=f"^Config.{field} must be {rule}"):
            Config(**{"predictor": "closed_form", "closed_form": "visser", field: value})
    assert get_config("closed_form_visser", visser_step=0.05).visser_step == 0.05
    assert get_config("closed_form_ns", isoloss=True, closed_form_ema=0.9).isoloss


def test_config_files_without_the_new_fields_load_to_the_same_run():
    """New fields with defaults (no version bump): a file without them is the same run."""
    new = ("closed_form", "closed_form_iterations", "closed_form_ridge", "closed_form_ema",
           "visser_step")
    for name in ("direct_pred", "direct_set", "byol"):
        values = json.loads(get_config(name).to_json())
        for field in new:
            del values[field]
        assert Config.from_dict(values) == get_config(name)
    for name in FACTORIES:
        assert Config.from_json(get_config(name).to_json()) == get_config(name)


def _trained(name, views, steps, **overrides):
    config = tiny_config(name, **overrides)
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=1), run_eagerly=True)
    assert model.predictor.trainable_variables == []
    kernels, corrs = [], []
    for _ in range(steps):
        model.train_on_batch(views)
        kernels.append(model.predictor_kernel.numpy().astype(np.float64))
        corrs.append(model.correlation.numpy().astype(np.float64))
    return config, kernels, corrs


def test_train_step_sets_wp_from_f(views):
    """One TF step of ``closed_form_stiefel`` (tiny): Wp^T = the NumPy Stiefel rule of F."""
    config, kernels, corrs = _trained("closed_form_stiefel", views, 1)
    want = np_stiefel(corrs[0], 9, 0.3)
    np.testing.assert_allclose(kernels[0], want.T, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("name", FACTORIES)
def test_eigenspace_tracker_reads_the_closed_form_predictor(name, views):
    """--eigenspace: each rule is a polynomial in F, so Wp is aligned with F's eigenvectors
    (cosine 1) and its spectrum is the NumPy rule's on the same F."""
    from experiments import callbacks as cb
    config = tiny_config(name, eigenspace=True)
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=1), run_eagerly=True)
    model.train_on_batch(views)
    record = cb.eigenspace_snapshot(model, views[0], epoch=1)
    corr = model.correlation.numpy().astype(np.float64)
    rule = {"closed_form_ns": lambda f: np_ns(f, 9, 0.9),
            "closed_form_ns2": lambda f: np_ns2(f, 7, 0.9),
            "closed_form_stiefel": lambda f: np_stiefel(f, 9, 0.3),
            "closed_form_visser": lambda f: np_visser(f, 50, 0.5)}[name]
    want = np.linalg.eigvalsh(rule(0.5 * (corr + corr.T)))
    scale = np.abs(want).max()
    np.testing.assert_allclose(np.sort(record["wp_eigenvalues"]), want, atol=1e-4 * scale)
    np.testing.assert_allclose(np.abs(record["alignment"]), 1.0, atol=1e-3)


def test_train_step_ema_of_wp(views):
    """closed_form_ema 0.5: the first step sets Wp = rule(F_1), the second
    Wp = 0.5 Wp_1 + 0.5 rule(F_2)."""
    config, kernels, corrs = _trained("closed_form_ns2", views, 2, closed_form_ema=0.5)
    first = np_ns2(corrs[0], 7, 0.9)
    np.testing.assert_allclose(kernels[0], first.T, atol=1e-5 * np.abs(first).max())
    second = 0.5 * first + 0.5 * np_ns2(corrs[1], 7, 0.9)
    np.testing.assert_allclose(kernels[1], second.T, atol=1e-5 * np.abs(second).max())


_RULES = r'''
from models import predictors
for kind in ("newton_schulz", "ns2", "stiefel", "visser"):
    out["rule/" + kind] = np.asarray(predictors.CLOSED_FORMS[kind](INPUTS["corr"], 9, 0.3, 0.5))
out["rule/lrp"] = np.asarray(predictors.linear_regression_predictor(INPUTS["z"], INPUTS["zt"]))
out["rule/ne"] = np.asarray(predictors.neumann_predictor(INPUTS["z"], INPUTS["zt"]))
'''


@pytest.mark.skipif(not jax_available(), reason="jax not installed (pip install -e .[jax])")
def test_jax_equals_tf(tmp_path):
    """Under JAX (TensorFlow blocked): the rules equal TF's and NumPy's, and two train steps
    of ``closed_form_stiefel`` equal TF's, to the bounds of tests/models/test_jax_equivalence.py
    (the same worker)."""
    from tests.models import test_jax_equivalence as eq

    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    x2 = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    z = (0.2 * rng.normal(size=(32, 5))).astype("float32")
    zt = (z + 0.05 * rng.normal(size=(32, 5))).astype("float32")
    name = "closed_form_stiefel"
    spec, tf_result = eq._tf_side(name, {}, tmp_path, x1, x2, None)
    worker = eq.WORKER.replace("\nsave(**out)\n", "\n" + _RULES + "\nsave(**out)\n")
    assert worker != eq.WORKER
    out = run_jax_worker(worker, tmp_path, dict(
        specs=np.array(json.dumps({name: spec})), x1=x1, x2=x2, labels=np.zeros(4, "int64"),
        corr=CORR.astype("float32"), z=z, zt=zt))
    for kind in ("newton_schulz", "ns2", "stiefel", "visser"):
        tf_rule = np.asarray(predictors.CLOSED_FORMS[kind](CORR.astype("float32"), 9, 0.3, 0.5))
        np.testing.assert_allclose(out["rule/" + kind], tf_rule, atol=1e-5, err_msg=kind)
        np.testing.assert_allclose(out["rule/" + kind], REFERENCES[kind](CORR, 9, 0.3),
                                   atol=2e-5 * np.abs(tf_rule).max(), err_msg=kind)
    np.testing.assert_allclose(out["rule/lrp"], np.asarray(
        predictors.linear_regression_predictor(z, zt)), atol=1e-4)
    np.testing.assert_allclose(out["rule/ne"], np.asarray(predictors.neumann_predictor(z, zt)),
                               atol=1e-5)
    for step in range(eq.STEPS):
        np.testing.assert_allclose(out[f"{name}/loss{step}"], tf_result[f"loss{step}"],
                                   rtol=eq.LOSS_RTOL)
    for path, start in tf_result["initial"].items():
        want, got = tf_result[path], out[f"{name}/{path}"]
        if want.dtype.kind in "iu":
            np.testing.assert_array_equal(got, want, err_msg=path)
        elif want.size:
            change = float(np.max(np.abs(want - start)))
            assert np.max(np.abs(got - want)) < eq.CHANGE_RTOL * change + eq.ATOL, path
    assert keras.backend.backend() == "tensorflow"
