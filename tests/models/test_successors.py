"""DirectSet(alpha) and IsoLoss (docs/successors.md) against NumPy references: the rule's
special cases, the IsoLoss gradient against finite differences of the formula of
fmi-basel/implicit-var-reg ``solo/losses/isoloss.py``, the config, the train step and the
eigenspace tracker."""

import json

import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from config import Config, get_config
from experiments import callbacks as cb
from experiments.theory.claims import finite_difference_gradient
from models import SiameseNetwork, build_optimizer, losses, predictors
from tests.models.conftest import tiny_config

D = 5
SUCCESSORS = ("direct_set", "direct_set_no_ema", "direct_set_copy", "isoloss",
              "isoloss_no_ema")


def psd(seed, d=D):
    z = np.random.default_rng(seed).normal(size=(64, d)) * np.linspace(2.0, 0.2, d)
    return z.T @ z / len(z)


def np_direct_set(corr, alpha, eps, eps_at):
    """NumPy reference: ``r = s+ / s_max``; ``r^alpha + eps`` or ``(r + eps)^alpha``."""
    s, u = np.linalg.eigh(corr)
    r = np.maximum(s, 0) / s.max()
    p = r ** alpha + eps if eps_at == "after_power" else (r + eps) ** alpha
    return (u * np.maximum(p, 1e-4)) @ u.T


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("eps_at", ["after_power", "before_power"])
def test_direct_set_matches_its_numpy_formula(alpha, eps_at):
    corr = psd(0)
    got = np.asarray(predictors.direct_set_weights(corr, alpha, 0.2, eps_at))
    np.testing.assert_allclose(got, np_direct_set(corr, alpha, 0.2, eps_at), atol=2e-5)


@pytest.mark.parametrize("eps", [0.0, 0.01, 0.3])
def test_direct_pred_and_direct_copy_are_direct_set_one_half_and_one(eps):
    corr = psd(1)
    half = predictors.direct_set_weights(corr, 0.5, eps, "after_power")
    np.testing.assert_allclose(np.asarray(half),
                               np.asarray(predictors.direct_pred_weights(corr, eps, 0.5)),
                               atol=1e-6)
    copy = predictors.direct_copy_weights(corr, max(eps, 1e-4), "spectral")
    for eps_at in ("after_power", "before_power"):  # alpha = 1: both placements agree
        one = predictors.direct_set_weights(corr, 1.0, max(eps, 1e-4), eps_at)
        np.testing.assert_allclose(np.asarray(one), np.asarray(copy), atol=1e-5)
    # implicit-var-reg's placement equals DirectPred only at eps = 0.
    before = np.asarray(predictors.direct_set_weights(corr, 0.5, eps, "before_power"))
    assert np.allclose(before, np.asarray(half), atol=1e-5) == (eps == 0.0)


def test_rule_from_config_and_refused_options():
    config = get_config("direct_set_copy")
    rule = predictors.predictor_rule(config)
    np.testing.assert_allclose(np.asarray(rule(psd(2))),
                               np_direct_set(psd(2), 1.0, 0.25, "before_power"), atol=2e-5)
    with pytest.raises(ValueError, match=r"^Config.isoloss applies to predictor="):
        Config(isoloss=True)
    with pytest.raises(ValueError, match="directset_alpha applies to predictor='directset'"):
        get_config("direct_pred", directset_alpha=1.0)
    with pytest.raises(ValueError, match=r"directset_alpha must be > 0. Received: "):
        Config(predictor="directset", directset_alpha=0.0)
    with pytest.raises(ValueError, match="isoloss must be True or False"):
        Config(predictor="directset", isoloss=1)
    # Every option of a computed predictor is accepted with IsoLoss.
    assert get_config("direct_pred", isoloss=True).isoloss


def test_old_config_files_load_to_the_same_run():
    """New fields with defaults: a version-4 file without them is the same run (no bump)."""
    for name in ("direct_pred", "direct_copy", "byol"):
        config = get_config(name)
        values = json.loads(config.to_json())
        for field in ("isoloss", "directset_alpha", "directset_eps_at"):
            del values[field]
        assert Config.from_dict(values) == config
    for name in SUCCESSORS:
        assert Config.from_json(get_config(name).to_json()) == get_config(name)


def np_isoloss_cosine(z, zt, wp, z0):
    """implicit-var-reg ``isoloss_func`` as a function of ``z`` (detached parts at
    ``z0``), row vectors: ``-2 mean(z.zt / (|p||zt|) - 1/2 p.zt / (|p|^3 |zt|) |z Wp^1/2|^2)``."""
    p0 = z0 @ wp
    n_p, n_t = np.linalg.norm(p0, axis=1), np.linalg.norm(zt, axis=1)
    s, u = np.linalg.eigh(wp)
    sqrt = (u * np.sqrt(s)) @ u.T
    sim = ((z * zt).sum(1) / (n_p * n_t)
           - 0.5 * (p0 * zt).sum(1) / (n_p ** 3 * n_t) * np.sum((z @ sqrt) ** 2, 1))
    return -2.0 * sim.mean()


def np_isoloss_l2(z, zt, wp, z0):
    """implicit-var-reg ``isoloss_func_l2``: ``mean |z - sg(zt + z - p)|^2``."""
    return np.mean(np.sum((z - (zt + z0 - z0 @ wp)) ** 2, axis=1))


@pytest.mark.parametrize("kind", ["cosine", "l2"])
def test_isoloss_gradient_matches_finite_differences_of_the_formula(kind):
    rng = np.random.default_rng(3)
    z0, zt = rng.normal(size=(6, D)), rng.normal(size=(6, D))
    wp = np_direct_set(psd(4), 0.5, 0.05, "before_power")
    dense = layers.Dense(D, use_bias=False)
    dense.build((None, D))
    dense.kernel.assign(wp.T.astype("float32"))
    loss_fn = losses.negative_cosine if kind == "cosine" else losses.squared_l2
    z = tf.Variable(z0.astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        iso = tf.reduce_mean(loss_fn(losses.isotropic_prediction(dense, z), zt))
        plain = tf.reduce_mean(loss_fn(dense(z), zt))
    reference = np_isoloss_cosine if kind == "cosine" else np_isoloss_l2
    expected = finite_difference_gradient(lambda v: reference(v, zt, wp, z0), z0)
    np.testing.assert_allclose(tape.gradient(iso, z).numpy(), expected, atol=2e-5)
    # Same value as the ordinary loss; its z-gradient is IsoLoss's times Wp^T, so in Wp's
    # eigenbasis each mode's gradient is the eigenvalue times IsoLoss's.
    assert float(iso) == pytest.approx(float(plain), rel=1e-6)
    np.testing.assert_allclose(tape.gradient(plain, z).numpy(), expected @ wp, atol=2e-5)
    # The predictor's own gradient is the ordinary one.
    np.testing.assert_allclose(tape.gradient(iso, dense.kernel).numpy(),
                               tape.gradient(plain, dense.kernel).numpy(), atol=1e-6)


@pytest.mark.parametrize("name", SUCCESSORS)
def test_successor_factories_train_a_step(name, views):
    config = tiny_config(name)
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=1), run_eagerly=True)
    assert model.predictor.trainable_variables == []
    model.train_on_batch(views)
    corr = model.correlation.numpy()
    np.testing.assert_allclose(
        model.predictor_kernel.numpy(),
        np_direct_set(corr, config.directset_alpha, config.predictor_eps, "before_power"),
        atol=1e-4)


def test_eigenspace_tracker_reads_the_direct_set_predictor(views):
    """--eigenspace: Wp's spectrum is the rule applied to F's, in F's eigenbasis."""
    config = tiny_config("direct_set_copy", eigenspace=True)
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=1), run_eagerly=True)
    model.train_on_batch(views)
    record = cb.eigenspace_snapshot(model, views[0], epoch=1)
    s = record["f_eigenvalues"]
    expected = np.maximum(np.maximum(s, 0) / s.max() + 0.25, 1e-4)
    np.testing.assert_allclose(record["wp_eigenvalues"], expected, atol=1e-4)
    np.testing.assert_allclose(np.abs(record["alignment"]), 1.0, atol=1e-3)
