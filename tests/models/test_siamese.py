"""SiameseNetwork's train step against NumPy references of each update rule."""

import math

import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import (SiameseNetwork, build_model, build_optimizer, direct_pred_weights,
                    ema_tau)
from tests.models.conftest import tiny_config


def make(config):
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config), jit_compile=config.jit_compile)
    return model


def online_z(model, x):
    """z of the online branch in training mode (batch statistics), without
    touching the model's state."""
    saved = [v.numpy() for v in model.online_encoder.weights + model.online_projector.weights]
    z = model.online_projector(model.online_encoder(x, training=True), training=True).numpy()
    for v, value in zip(model.online_encoder.weights + model.online_projector.weights, saved):
        v.assign(value)
    return z


def weights(variables):
    return [v.numpy().copy() for v in variables]


def np_direct_pred(corr, eps, power=0.5):
    """NumPy reference of Eq. 18: U diag(max((s+/s_max)^power + eps, 1e-4)) U^T
    (power 0.5: the square root)."""
    s, u = np.linalg.eigh(corr)
    p = np.maximum((np.maximum(s, 0) / s.max()) ** power + eps, 1e-4)
    return (u * p) @ u.T


def check_one_ema_step(model, views, tau):
    """Runs one step; asserts target <- tau * target + (1 - tau) * online (after the
    optimizer update) for every target variable. Returns (target before, online after)."""
    target_vars = model.target_encoder.weights + model.target_projector.weights
    online_vars = model.online_encoder.weights + model.online_projector.weights
    assert len(target_vars) == len(online_vars)
    before = weights(target_vars)
    model.train_on_batch(views)
    after_online = weights(online_vars)
    for t, t0, o in zip(target_vars, before, after_online):
        np.testing.assert_allclose(t.numpy(), tau * t0 + (1 - tau) * o, rtol=1e-5,
                                   atol=1e-6, err_msg=t.path)
    return before, after_online


def test_ema_update_of_every_target_variable_including_bn_statistics(views):
    config = tiny_config("byol", ema_tau=0.9)
    model = make(config)
    model.train_on_batch(views)  # builds the optimizer; target != online afterwards
    assert any("moving_mean" in v.path for v in model.target_encoder.weights)
    before, after_online = check_one_ema_step(model, views, 0.9)
    assert not np.allclose(before[0], after_online[0])  # the check is not vacuous


def test_target_starts_as_a_copy_of_the_online_network():
    model = SiameseNetwork(tiny_config("byol", target_init="copy"))
    for t, o in zip(model.target_encoder.weights, model.online_encoder.weights):
        np.testing.assert_array_equal(t.numpy(), o.numpy())


def test_independent_target_init_is_its_own_draw_then_follows_the_ema(views):
    model = make(tiny_config("byol", ema_tau=0.9, target_init="independent"))
    kernels = [(t, o) for t, o in zip(model.target_encoder.weights,
                                      model.online_encoder.weights) if "kernel" in t.path]
    assert kernels and all(not np.allclose(t.numpy(), o.numpy()) for t, o in kernels)
    model.train_on_batch(views)
    check_one_ema_step(model, views, 0.9)
    for name in ("simsiam", "simclr"):
        with pytest.raises(ValueError, match="target_init='copy'"):
            config_lib.get_config(name).replace(target_init="copy")
    with pytest.raises(ValueError, match="target_init must be one of"):
        config_lib.get_config("byol").replace(target_init="random")


def test_simsiam_target_is_the_online_network_under_stop_gradient(views):
    model = make(tiny_config("simsiam"))
    assert model.target_encoder is None and model.target_projector is None
    x1, x2 = views
    with tf.GradientTape(persistent=True) as tape:
        z1 = model.online_projector(model.online_encoder(x1, training=True), training=True)
        z2 = model.online_projector(model.online_encoder(x2, training=True), training=True)
        t1, t2 = model._targets(x1, x2, z1, z2)
        target_sum = tf.reduce_sum(t1) + tf.reduce_sum(t2)
        online_sum = tf.reduce_sum(z1)
    np.testing.assert_array_equal(t1.numpy(), z1.numpy())
    variables = model.online_encoder.trainable_variables
    assert all(g is None for g in tape.gradient(target_sum, variables))
    assert any(g is not None for g in tape.gradient(online_sum, variables))


def test_cosine_ema_schedule_matches_formula():
    for k, total in [(0, 100), (25, 100), (100, 100)]:
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * k / total) + 1) / 2
        assert float(ema_tau(0.99, k, total, "cosine")) == pytest.approx(expected, abs=1e-6)
    assert float(ema_tau(0.99, 7, 100, "constant")) == pytest.approx(0.99)


@pytest.mark.parametrize("name, power", [("direct_pred", 0.5), ("simsiam_pred", 0.5),
                                         ("direct_pred", 1.0)])
def test_direct_pred_sets_wp_from_f_and_is_not_trained(views, name, power):
    config = tiny_config(name).replace(predictor_power=power)
    model = make(config)
    assert model.predictor.trainable_variables == []
    x1, x2 = views
    z = np.concatenate([online_z(model, x1), online_z(model, x2)])
    model.train_on_batch(views)
    corr = z.T @ z / len(z)  # first step: F = E[z z^T]
    np.testing.assert_allclose(model.correlation.numpy(), corr, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predictor_kernel.numpy(),
                               np_direct_pred(corr, config.predictor_eps, power), atol=1e-4)


@pytest.mark.parametrize("norm", ["spectral", "frobenius"])
def test_direct_copy_sets_wp_from_f(views, norm):
    config = tiny_config("direct_copy", directcopy_norm=norm)
    model = make(config)
    x1, x2 = views
    z = np.concatenate([online_z(model, x1), online_z(model, x2)])
    model.train_on_batch(views)
    corr = z.T @ z / len(z)
    scale = np.linalg.eigvalsh(corr).max() if norm == "spectral" else np.linalg.norm(corr)
    expected = corr / scale + 0.3 * np.eye(len(corr))
    np.testing.assert_allclose(model.predictor_kernel.numpy(), expected, atol=1e-5)


@pytest.mark.parametrize("trained_between", [False, True])
def test_freq_5_sets_wp_on_steps_0_and_5_and_f_accumulates(views, trained_between):
    """Wp is set from F on steps 0 and 5; in between it is frozen (the TF2 reproduction)
    or trained by the optimizer (the paper's Sec. 4 and the official code: the default)."""
    config = tiny_config("direct_pred_freq_5", predictor_trained_between=trained_between)
    assert config.predictor_freq == 5
    model = make(config)
    x1, x2 = views
    rho = config.corr_rho
    ref = None
    changed = []
    for step in range(7):
        z = np.concatenate([online_z(model, x1), online_z(model, x2)])
        batch = z.T @ z / len(z)
        ref = batch if ref is None else rho * ref + (1 - rho) * batch
        before = model.predictor_kernel.numpy().copy()
        model.train_on_batch(views)
        np.testing.assert_allclose(model.correlation.numpy(), ref, rtol=1e-3, atol=1e-5)
        after = model.predictor_kernel.numpy()
        changed.append(not np.array_equal(before, after))
        if step in (0, 5):
            np.testing.assert_allclose(
                after, direct_pred_weights(ref.astype("float32"), 0.1).numpy(), atol=1e-3)
    assert changed == [True, trained_between, trained_between, trained_between,
                       trained_between, True, trained_between]


@pytest.mark.parametrize("name", ["eigenspace_experiment_with_symmetry", "simsiam_symmetric"])
def test_symmetry_regularisation(views, name):
    model = make(tiny_config(name))
    model.train_on_batch(views)
    kernels = [layer.kernel.numpy() for layer in model.predictor.layers
               if hasattr(layer, "kernel")]
    if len(kernels) == 1:
        np.testing.assert_allclose(kernels[0], kernels[0].T, atol=1e-7)
    else:
        np.testing.assert_allclose(kernels[1], kernels[0].T, atol=1e-7)


def grads_at(model, views):
    """Gradients of the SSL loss in training mode, state restored afterwards."""
    variables = [v for v, _ in model.trainable_with_decay()]
    state = weights(model.weights)
    with tf.GradientTape() as tape:
        loss, _ = model.compute_ssl_loss(*views, training=True)
    grads = tape.gradient(loss, variables)
    for v, value in zip(model.weights, state):
        v.assign(value)
    return variables, [g.numpy() for g in grads]


def assert_step(variable, expected):
    """Updated weights equal the expected SGD step up to float noise between eager and
    graph gradients, which scales with the largest entry (batch-4 BN gradients under
    eps 1e-5 reach ~1e2, so their 1e-5 relative noise is ~1e-3 absolute)."""
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-3, atol=2e-4 * scale,
                               err_msg=variable.path)


def test_coupled_l2_weight_decay_is_added_to_every_gradient(views):
    # wd * lr = 0.05: a missing or doubled decay moves weights by ~5% of their
    # value, far above the float noise between eager and graph gradients (~3e-5).
    config = tiny_config("byol_baseline", momentum=0.0, weight_decay=0.5,
                         learning_rate=0.1, symmetry=False)  # no step after the update
    model = make(config)
    variables, grads = grads_at(model, views)
    before = weights(variables)
    model.train_on_batch(views)
    for v, w0, g in zip(variables, before, grads):
        assert_step(v, w0 - 0.1 * (g + 0.5 * w0))


def test_predictor_learning_rate_multiplier_and_own_weight_decay(views):
    config = tiny_config("simsiam_symmetric_predictor", symmetry=False, momentum=0.0,
                         weight_decay=0.5, learning_rate=0.1)
    assert config.predictor_lr_multiplier == 10.0 and config.predictor_weight_decay == 0.0
    model = make(config)
    variables, grads = grads_at(model, views)
    predictor_ids = {id(v) for v in model.predictor.trainable_variables}
    before = weights(variables)
    model.train_on_batch(views)
    for v, w0, g in zip(variables, before, grads):
        if id(v) in predictor_ids:
            expected = w0 - 1.0 * g  # 10 x lr, no decay
        else:
            expected = w0 - 0.1 * (g + 0.5 * w0)
        assert_step(v, expected)


@pytest.mark.parametrize("name", sorted(config_lib.FACTORIES))
def test_every_factory_trains_two_steps_with_finite_loss(name):
    # Eagerly: tracing 14 graphs costs minutes; the graph path of each update rule
    # is covered by the tests above.
    config = tiny_config(name)
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=2), run_eagerly=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(8, 8, 8, 3)).astype("float32")
    labels = np.array([0, 1, 0, 1, 2, 2, 1, 0], np.int32)
    ds = tf.data.Dataset.from_tensor_slices(((x, x[::-1]), labels)).batch(4)
    history = model.fit(ds, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0]) and np.isfinite(history["z_std"][0])
    assert int(model.step_counter.numpy()) == 2


@pytest.mark.parametrize("precision,jit", [("bfloat16", False), ("float16", False),
                                           ("none", True), ("float16", True)])
def test_mixed_precision_and_xla_train_steps(views, precision, jit):
    config = tiny_config("direct_pred", mixed_precision=precision, jit_compile=jit)
    model = make(config)
    if precision == "float16":
        assert "LossScaleOptimizer" in type(model.optimizer).__name__
    for _ in range(2):
        logs = model.train_on_batch(views, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert int(model.step_counter.numpy()) == 2
    if precision == "float16":  # dynamic loss scaling ran (also compiled by XLA)
        assert 0 < float(model.optimizer.dynamic_scale.numpy()) <= 2.0 ** 15
    assert model.correlation.dtype == "float32"
    if precision != "none":
        assert model.online_encoder.layers[1].compute_dtype == {
            "bfloat16": "bfloat16", "float16": "float16"}[precision]
    np.testing.assert_allclose(model.predictor_kernel.numpy(),
                               model.predictor_kernel.numpy().T, atol=1e-5)


def test_rejects_batches_that_are_not_two_views():
    model = make(tiny_config("byol"))
    with pytest.raises(ValueError, match="two views"):
        model.train_step(tf.zeros((4, 8, 8, 3)))


def test_siamese_network_round_trips_through_keras_file(tmp_path, views):
    config = tiny_config("direct_pred")
    model = make(config)
    model.train_on_batch(views)
    path = str(tmp_path / "siamese.keras")
    model.save(path)
    import keras
    loaded = keras.models.load_model(path, compile=False)
    assert loaded.config == config
    x = views[0]
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)
    np.testing.assert_array_equal(loaded.correlation.numpy(), model.correlation.numpy())
    np.testing.assert_array_equal(loaded.predictor_kernel.numpy(),
                                  model.predictor_kernel.numpy())
    assert int(loaded.step_counter.numpy()) == 1


def test_device_augmentation_trains_on_raw_uint8_batches():
    config = tiny_config("byol", augment_on="device")
    model = make(config)
    images = np.random.default_rng(0).integers(0, 256, size=(4, 8, 8, 3), dtype=np.uint8)
    logs = model.train_on_batch(images, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["loss"] > 0
    assert int(model.step_counter.numpy()) == 1


def test_cosine_ema_schedule_is_used_by_the_step(views):
    config = tiny_config("byol", ema_tau=0.9, ema_schedule="cosine")
    model = make(config)
    model.set_total_steps(4)
    model.train_on_batch(views)  # step 0: tau = 0.9
    # step 1 of 4: tau = 1 - 0.1 (cos(pi/4) + 1) / 2
    check_one_ema_step(model, views, 1 - 0.1 * (math.cos(math.pi / 4) + 1) / 2)


def test_centred_correlation_through_the_step(views):
    config = tiny_config("direct_pred", corr_center=True)
    model = make(config)
    x1, x2 = views
    z = np.concatenate([online_z(model, x1), online_z(model, x2)])
    model.train_on_batch(views)
    mean = z.mean(0)
    np.testing.assert_allclose(model.correlation_mean.numpy(), mean, rtol=1e-4, atol=1e-6)
    centred = z.T @ z / len(z) - np.outer(mean, mean)
    np.testing.assert_allclose(model.predictor_kernel.numpy(), np_direct_pred(centred, 0.1),
                               atol=1e-4)
