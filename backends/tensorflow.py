"""The TensorFlow backend: GradientTape step, ``tf.function``, ``tf.distribute``, tf.data.

The functions :mod:`backends` lists. The replica helpers talk to the current
``tf.distribute`` replica context (identities outside a strategy or on one replica);
the input is tf.data (tfds or in-memory) split by Keras's ``fit`` across replicas.
"""

import tensorflow as tf

from data_processing import augment_ops, augmentations, datasets
# The tf.data pipelines and the loaders of every dataset (tfds, folder, synthetic).
from data_processing.augmentations import evaluation_dataset, pretraining_dataset  # noqa: F401
from experiments import distribute

load_dataset = datasets.load_dataset_from_config

#: Keras's TensorBoard callback writes with ``tf.summary``.
WRITES_TENSORBOARD = True


# ---------------------------------------------------------------------------
# Replicas (tf.distribute).
# ---------------------------------------------------------------------------

def _replica_context():
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


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
    return context.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_offset(x):
    """Index of this replica's first example in the gathered global batch."""
    context = _replica_context()
    if context is None:
        return 0
    return context.replica_id_in_sync_group * tf.shape(x)[0]


def num_replicas():
    """Replicas taking part in the current step (1 outside a strategy)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def across_workers():
    """Whether the current strategy spans several workers (hosts)."""
    strategy = tf.distribute.get_strategy()
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    return strategy.num_replicas_in_sync > len(strategy.extended.worker_devices)


def use_synchronized_bn(synchronized=None):
    """``synchronized``, or when ``None``: whether the current strategy has more than
    one replica."""
    if synchronized is None:
        return num_replicas() > 1
    return bool(synchronized)


# ---------------------------------------------------------------------------
# Device-side augmentation (augment_on="device").
# ---------------------------------------------------------------------------

def augmentation_seeds(seed, step_counter):
    """The stateless seeds of the two views of step ``step_counter``: a function of
    (seed, replica, step), so a resumed run draws what the uninterrupted one would
    have drawn."""
    context = tf.distribute.get_replica_context()
    replica = 0 if context is None else context.replica_id_in_sync_group
    first = tf.stack([tf.cast(seed * 4096 + replica, tf.int64),
                      2 * tf.cast(step_counter, tf.int64)])
    return first, first + tf.constant([0, 1], tf.int64)


def augmented_views(images, params, seed, step_counter):
    """The two augmented views of raw ``images`` at step ``step_counter``:
    ``augment_batch``'s XLA stages, seeded by :func:`augmentation_seeds`."""
    seed1, seed2 = augmentation_seeds(seed, step_counter)
    return (augmentations.augment_batch(images, params, seed1),
            augmentations.augment_batch(images, params, seed2))


# ---------------------------------------------------------------------------
# Steps.
# ---------------------------------------------------------------------------

def trained_variables(model):
    """The variables in the order :func:`train_step` passes them to the optimizer
    (the optimizer is built on them)."""
    return [v for v, _ in model.trainable_with_decay()]


def train_step(model, data):
    """The train step of an :class:`models.base.SSLModel` (``GradientTape``, run by
    Keras's ``fit`` in a ``tf.function``, once per replica): forward and loss,
    gradients (+ coupled decay, method adjustments), optimizer, then
    :meth:`~models.base.SSLModel.finish_step` (after-step updates, counter, metrics).
    :func:`backends.jax.train_step` does the same, in the same order."""
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


def inference(encoder):
    """``images -> float32 outputs`` of ``encoder`` in inference mode (a
    ``tf.function``, traced once per input signature)."""
    return tf.function(lambda images: tf.cast(encoder(images, training=False), tf.float32),
                       reduce_retracing=True)


def probe_functions(network, optimizer, loss_fn):
    """The linear probe's ``(step, predict)``: ``step(features, labels) -> (loss,
    logits)`` is one ``optimizer`` step on ``loss_fn(network, features, labels) ->
    (loss, logits)`` plus ``network.linear.losses`` (the coupled L2);
    ``predict(features)`` the head's logits."""
    variables = network.linear.trainable_variables

    @tf.function
    def step(features, labels):
        with tf.GradientTape() as tape:
            loss, logits = loss_fn(network, features, labels)
            total = loss + tf.add_n(network.linear.losses) if network.linear.losses else loss
        grads = tape.gradient(total, variables)
        optimizer.apply(grads, variables)
        return loss, logits

    return step, tf.function(network.head)


# ---------------------------------------------------------------------------
# A run's input and devices: tf.data, tfds, tf.distribute.
# ---------------------------------------------------------------------------

def check_run(config):
    """Every config runs under TensorFlow (the config checks its own fields)."""
    del config


def probe_images(data, config, num):
    """The first ``num`` training images, eval-transformed (the eigenspace probe)."""
    images = [x for x, _ in data.train.take(num).batch(256)]
    return augment_ops.eval_transform(tf.concat(images, axis=0),
                                      augment_ops.AugmentParams.from_config(config))


def distribute_dataset(dataset, strategy):
    """Under several replicas, ``fit`` splits each global batch; across workers every
    worker builds the same (seeded) pipeline and keeps its share (DATA sharding)."""
    if strategy.num_replicas_in_sync == 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


#: The strategy called ``name``, and whether this worker writes the results folder.
make_strategy, is_chief = distribute.make_strategy, distribute.is_chief


def jit(fn):
    """``fn`` compiled as one graph (``tf.function``, retracing reduced)."""
    return tf.function(fn, reduce_retracing=True)
