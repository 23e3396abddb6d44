"""The TensorFlow seam of the models: ``tf.distribute`` helpers.

Everything else in :mod:`models` is ``keras.ops`` maths that runs on any Keras
backend (docs/backends.md). Under TensorFlow these helpers talk to the current
``tf.distribute`` replica context; under another backend (JAX: one device per
process here) they are the single-device identities, and TensorFlow is never
imported.
"""

import keras


def _tf():
    """``tensorflow`` when it is the Keras backend, else ``None`` (not imported)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf
    return tf


def _replica_context():
    tf = _tf()
    if tf is None:
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def device_augmentation_seeds(seed, step_counter):
    """The stateless seeds of the two views of step ``step_counter`` (device-side
    augmentation, TensorFlow only): a function of (seed, replica, step), so a resumed
    run draws what the uninterrupted one would have drawn."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    first = tf.stack([tf.cast(seed * 4096 + replica, tf.int64),
                      2 * tf.cast(step_counter, tf.int64)])
    return first, first + tf.constant([0, 1], tf.int64)


def device_augmented_views(images, params, seed, step_counter):
    """The two augmented views of raw ``images`` at step ``step_counter`` (TensorFlow:
    ``augment_batch``'s XLA stages, seeded by :func:`device_augmentation_seeds`).
    :func:`models.jax_seam.device_augmented_views` is the JAX twin."""
    from data_processing.augmentations import augment_batch

    seed1, seed2 = device_augmentation_seeds(seed, step_counter)
    return augment_batch(images, params, seed1), augment_batch(images, params, seed2)


def cross_replica_gather(x):
    """``x`` of every replica concatenated along the batch axis (identity on one
    device). Used by losses that need the global batch (F, negatives, C)."""
    context = _replica_context()
    return x if context is None else context.all_gather(x, axis=0)


def cross_replica_sum(x):
    """Sum of ``x`` over replicas (identity on one device)."""
    context = _replica_context()
    if context is None:
        return x
    return context.all_reduce(_tf().distribute.ReduceOp.SUM, x)


def replica_offset(x):
    """Index of this replica's first example in the gathered global batch."""
    context = _replica_context()
    if context is None:
        return 0
    return context.replica_id_in_sync_group * _tf().shape(x)[0]


def num_replicas():
    """Replicas taking part in the current step (1 outside a strategy)."""
    tf = _tf()
    return 1 if tf is None else tf.distribute.get_strategy().num_replicas_in_sync


def across_workers():
    """Whether the current strategy spans several workers (hosts)."""
    tf = _tf()
    if tf is None:
        return False
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def use_synchronized_bn(synchronized=None):
    """``synchronized``, or when ``None``: whether the current ``tf.distribute``
    strategy has more than one replica (never under another backend)."""
    if synchronized is None:
        return num_replicas() > 1
    return bool(synchronized)


def tf_train_step(model, data):
    """The TensorFlow train step of an :class:`models.base.SSLModel` (``GradientTape``,
    run by Keras's ``fit`` in a ``tf.function``, once per replica): forward and loss,
    gradients (+ coupled decay, method adjustments), optimizer, then
    :meth:`~models.base.SSLModel.finish_step` (after-step updates, counter, metrics).
    :func:`models.jax_step.jax_train_step` is its JAX twin, in the same order."""
    import tensorflow as tf
    x1, x2, labels = model.unpack_batch(data)
    pairs = model.trainable_with_decay()
    variables = [v for v, _ in pairs]
    with tf.GradientTape() as tape:
        loss, outputs = model.compute_ssl_loss(x1, x2, labels, training=True)
        # Gradients are summed over replicas: each replica's share of the mean.
        scaled_loss = model.optimizer.scale_loss(loss / num_replicas())
    grads = tape.gradient(scaled_loss, variables)
    grads = model.decayed_gradients(grads, pairs)
    grads = model.adjust_gradients(grads, variables)
    model.optimizer.apply(grads, variables)
    logs = model.finish_step(loss, outputs)
    if across_workers():
        # Keras's fit averages the step's outputs across workers along axis 0
        # (keras-team/keras#20585), which a scalar lacks: give them that axis.
        logs = {name: value[None] for name, value in logs.items()}
    return logs
