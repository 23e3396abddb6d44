"""The wider family over the shared step: SimCLR, SupCon, SwAV, MoCo v2, Barlow Twins.

Loss values are tested against NumPy in test_contrastive_losses.py; here: that each
method feeds its loss the right tensors, and its own state (queue, prototypes).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
from models import METHOD_CLASSES, build_model, build_optimizer, contrastive_losses
from tests.models.conftest import tiny_config

LABELS = np.array([0, 1, 0, 1], np.int32)


def make(name, steps_per_epoch=2, **overrides):
    config = tiny_config(name, **overrides)
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=steps_per_epoch))
    model.set_total_steps(10 * steps_per_epoch, steps_per_epoch=steps_per_epoch)
    return model


def frozen_forward(model, fn):
    """Runs ``fn`` (a training-mode forward) and restores every variable."""
    state = [v.numpy().copy() for v in model.weights]
    out = fn()
    for v, value in zip(model.weights, state):
        v.assign(value)
    return out


def test_registry_covers_every_method():
    assert sorted(METHOD_CLASSES) == sorted(config_lib.METHODS)
    for name in ("simclr", "supcon", "swav", "moco", "barlow_twins"):
        config = config_lib.get_config(name)
        assert config.method == name
        assert config_lib.MODELS[name] == name
        assert isinstance(build_model(tiny_config(name)), METHOD_CLASSES[name])


@pytest.mark.parametrize("name,loss_fn", [
    ("simclr", lambda c, z1, z2, y: contrastive_losses.nt_xent(z1, z2, c.temperature)),
    ("supcon", lambda c, z1, z2, y: contrastive_losses.supcon(z1, z2, y, c.temperature)),
    ("barlow_twins", lambda c, z1, z2, y: c.barlow_scale * contrastive_losses.barlow_twins(
        z1, z2, lambd=c.barlow_lambda)),
])
def test_loss_is_the_pure_loss_of_the_online_projections(views, name, loss_fn):
    model = make(name)
    labels = tf.constant(LABELS)
    loss, outputs = frozen_forward(
        model, lambda: model.compute_ssl_loss(*views, labels, training=True))
    z1 = frozen_forward(model, lambda: model.project(views[0]))
    z2 = frozen_forward(model, lambda: model.project(views[1]))
    np.testing.assert_allclose(outputs["z1"].numpy(), z1.numpy(), rtol=1e-5, atol=1e-6)
    expected = loss_fn(model.config, z1, z2, labels)
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-5)


def test_supcon_needs_labels(views):
    model = make("supcon")
    with pytest.raises(ValueError, match="needs labels"):
        model.train_step(views)
    logs = model.train_on_batch((views, LABELS), return_dict=True)
    assert np.isfinite(logs["loss"])


def test_moco_enqueues_the_keys_of_the_step_fifo(views):
    model = make("moco", queue_size=12)
    queue0 = model.queue.numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(queue0, axis=1), 1.0, rtol=1e-5)
    keys = np.concatenate([model.target_project(views[0]).numpy(),
                           model.target_project(views[1]).numpy()])
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    model.train_on_batch(views)
    queue1 = model.queue.numpy()
    np.testing.assert_allclose(queue1[:8], keys, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(queue1[8:], queue0[8:])
    assert int(model.queue_pointer.numpy()) == 8
    # The next 8 keys wrap around: rows 8..11, then 0..3.
    new = np.random.default_rng(1).normal(size=(8, 8)).astype("float32")
    model.enqueue(new)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    queue2 = model.queue.numpy()
    np.testing.assert_allclose(queue2[8:], new[:4], rtol=1e-5)
    np.testing.assert_allclose(queue2[:4], new[4:], rtol=1e-5)
    np.testing.assert_allclose(queue2[4:8], queue1[4:8])
    assert int(model.queue_pointer.numpy()) == 4


def test_moco_loss_uses_queries_keys_and_queue(views):
    model = make("moco", queue_size=12)
    loss, _ = frozen_forward(model, lambda: model.compute_ssl_loss(*views, training=True))
    q1 = frozen_forward(model, lambda: model.project(views[0]))
    q2 = frozen_forward(model, lambda: model.project(views[1]))
    k1, k2 = model.target_project(views[0]), model.target_project(views[1])
    t = model.config.temperature
    expected = 0.5 * (contrastive_losses.info_nce(q1, k2, model.queue, temperature=t)
                      + contrastive_losses.info_nce(q2, k1, model.queue, temperature=t))
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-5)


def test_moco_key_encoder_is_the_ema_of_the_query_encoder(views):
    model = make("moco", queue_size=12)
    online = [v.numpy().copy() for _, v in model.ema_pairs()]
    target = [t.numpy().copy() for t, _ in model.ema_pairs()]
    model.train_on_batch(views)
    tau = model.config.ema_tau
    for (t, o), t0 in zip(model.ema_pairs(), target):
        np.testing.assert_allclose(t.numpy(), tau * t0 + (1 - tau) * o.numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert any(not np.allclose(o.numpy(), o0) for (_, o), o0 in zip(model.ema_pairs(), online))


def test_swav_prototypes_frozen_in_first_epoch_then_trained_and_normalised(views):
    model = make("swav", steps_per_epoch=2, queue_size=0, num_prototypes=6,
                 freeze_prototypes_epochs=1)
    kernel0 = model.prototype_kernel.numpy().copy()
    np.testing.assert_allclose(np.linalg.norm(kernel0, axis=0), 1.0, rtol=1e-5)
    encoder0 = model.online_encoder.weights[0].numpy().copy()
    for _ in range(2):  # the first epoch
        model.train_on_batch(views)
    np.testing.assert_allclose(model.prototype_kernel.numpy(), kernel0, rtol=1e-5, atol=1e-6)
    assert not np.allclose(model.online_encoder.weights[0].numpy(), encoder0)
    model.train_on_batch(views)
    kernel = model.prototype_kernel.numpy()
    assert not np.allclose(kernel, kernel0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(kernel, axis=0), 1.0, rtol=1e-5)


def test_swav_queue_fills_then_joins_the_sinkhorn_batch(views):
    model = make("swav", steps_per_epoch=2, queue_size=8, num_prototypes=6,
                 queue_start_epoch=1)
    assert not bool(model._queue_active())
    # Record what the compiled train step hands to ``enqueue``, so the queue's
    # bookkeeping is checked exactly against the train step's own embeddings.
    handed = tf.Variable(tf.zeros((2, 4, model.config.projection_dim)))
    enqueue = model.enqueue

    def spy(embeddings):
        handed.assign(embeddings)
        enqueue(embeddings)

    model.enqueue = spy
    embeddings, forward = [], []
    for _ in range(2):
        _, out = frozen_forward(model, lambda: model.compute_ssl_loss(*views, training=True))
        forward.append(out["embeddings"].numpy())
        model.train_on_batch(views)
        embeddings.append(handed.numpy())
    # Newest first: the second step's embeddings, then the first's.
    np.testing.assert_array_equal(model.queue.numpy(),
                                  np.concatenate([embeddings[1], embeddings[0]], axis=1))
    # What was enqueued is the unit-norm projections of the two views. The reference is
    # a separate eager pass, so float32 reordering in the compiled step shows (up to
    # 3e-5 over 104 draws, batch-norm over 4 samples); a wrong embedding is off by ~0.1.
    for step in range(2):
        np.testing.assert_allclose(embeddings[step], forward[step], rtol=0, atol=1e-4)
    assert int(model.queue_count.numpy()) == 8 and bool(model._queue_active())
    loss, _ = frozen_forward(model, lambda: model.compute_ssl_loss(*views, training=True))
    e1 = frozen_forward(model, lambda: tf.math.l2_normalize(model.project(views[0]), -1))
    e2 = frozen_forward(model, lambda: tf.math.l2_normalize(model.project(views[1]), -1))
    kernel = model.prototype_kernel
    c = model.config
    expected = contrastive_losses.swav_loss(
        tf.matmul(e1, kernel), tf.matmul(e2, kernel), temperature=c.temperature,
        epsilon=c.sinkhorn_epsilon, iterations=c.sinkhorn_iterations,
        queue_scores1=tf.matmul(model.queue[0], kernel),
        queue_scores2=tf.matmul(model.queue[1], kernel))
    np.testing.assert_allclose(loss.numpy(), expected.numpy(), rtol=1e-4)
    without = contrastive_losses.swav_loss(
        tf.matmul(e1, kernel), tf.matmul(e2, kernel), temperature=c.temperature,
        epsilon=c.sinkhorn_epsilon, iterations=c.sinkhorn_iterations)
    assert abs(float(without) - float(expected)) > 1e-6


@pytest.mark.parametrize("name", ["simclr", "supcon", "swav", "moco", "barlow_twins"])
def test_method_round_trips_through_keras_file(tmp_path, views, name):
    model = make(name, **({"queue_size": 8} if name in ("swav", "moco") else {}))
    model.train_on_batch((views, LABELS))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    assert type(loaded) is type(model) and loaded.config == model.config
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=b.path)


@pytest.mark.parametrize("field,value", [("eigenspace", True), ("symmetry", True),
                                         ("predictor", "linear")])
def test_non_contrastive_fields_are_refused_by_other_methods(field, value):
    with pytest.raises(ValueError, match=field):
        config_lib.get_config("simclr").replace(**{field: value})


def test_moco_needs_a_momentum_encoder_and_a_queue():
    with pytest.raises(ValueError, match="ema_tau"):
        config_lib.get_config("moco").replace(ema_tau=0.0)
    with pytest.raises(ValueError, match="queue_size"):
        config_lib.get_config("moco").replace(queue_size=0)
