"""The JAX backend: Keras 3's stateless API, ``jax.jit``, one device, in-memory arrays.

The functions :mod:`backends` lists; TensorFlow is never imported. A run uses one
device (the replica helpers are identities) and the uint8 arrays of
:mod:`data_processing.arrays` (tfds and ``tf.distribute`` are TensorFlow).

The train step (Keras's JAX trainer calls ``model.train_step(state, data)`` inside
``jax.jit`` with ``state = (trainable, non_trainable, optimizer, metrics)`` values and
the model's variables purged; it returns ``(logs, new_state)``) does what
:func:`backends.tensorflow.train_step` does, in the same order:

0. the views (:meth:`~models.base.SSLModel.unpack_batch`; with
   ``augment_on="device"`` two augmentations of the raw batch drawn from (seed,
   step counter), :func:`augmented_views`) in a ``StatelessScope`` over the state,
   where the counter reads its state value;
1. forward and loss under ``jax.value_and_grad`` of a stateless call
   (:meth:`~models.base.SSLModel.compute_ssl_loss` in a ``StatelessScope`` over
   the whole state): the loss, the outputs, the new non-trainable values (BN
   statistics) and the gradients;
2. coupled weight decay and the method's gradient adjustments
   (:meth:`~models.base.SSLModel.decayed_gradients`,
   :meth:`~models.base.SSLModel.adjust_gradients`);
3. ``optimizer.stateless_apply``;
4. :meth:`~models.base.SSLModel.finish_step` (F, Wp, symmetry, EMA, queues,
   prototype normalisation, step counter, metrics) in a second
   ``StatelessScope`` over the *updated* state, at the highest float32 matmul
   precision (no TF32 for F, ``eigh`` or the EMA on a GPU).

Why the after-step updates are not in the forward: under JAX an assignment to a
*trainable* variable inside the differentiated function is dropped (only
non-trainable updates come back from the stateless call); here every variable
is mapped in step 4's scope, so every assignment there is kept.

Device-side augmentation draws the per-image uniforms of a step's two views from a
JAX key that is a function of (``config.seed``, step counter) only, as
:func:`backends.tensorflow.augmentation_seeds` does, so a resumed run draws the views
the uninterrupted run would have drawn. The two backends use different generators:
the same (seed, step) gives different views, from the same distribution.
"""

import contextlib

import jax
import keras

from data_processing import augment_ops
# The in-memory input: generators of NumPy batches.
from data_processing.arrays import (evaluation_dataset, pretraining_dataset,  # noqa: F401
                                    probe_images)
from data_processing.arrays import load_dataset_from_config as load_dataset  # noqa: F401

#: Keras's TensorBoard callback writes with ``tf.summary`` (TensorFlow).
WRITES_TENSORBOARD = False


# ---------------------------------------------------------------------------
# Replicas: one device per process.
# ---------------------------------------------------------------------------

def cross_replica_gather(x):
    """``x`` (one device: the global batch)."""
    return x


def cross_replica_sum(x):
    """``x`` (one device)."""
    return x


def replica_offset(x):
    """0: the only replica's batch starts the global batch."""
    del x
    return 0


def num_replicas():
    """1: one device per process."""
    return 1


def across_workers():
    """False: one process."""
    return False


def use_synchronized_bn(synchronized=None):
    """``synchronized`` as a bool (``None``: False, one replica)."""
    return bool(synchronized)


# ---------------------------------------------------------------------------
# Device-side augmentation (augment_on="device").
# ---------------------------------------------------------------------------

def augmentation_uniforms(seed, step_counter, batch):
    """The uniforms ``(u1, u2)``, each float32 [batch, augment_ops.NUM_UNIFORMS], of
    the two views of step ``step_counter``: ``uniform(fold_in(fold_in(key(seed),
    step), view))``. ``seed``: a Python int (its 64 bits: the high word is folded in,
    ``jax.random.key`` alone keeps 32 without x64); ``step_counter``: an int scalar
    (traced inside the jitted step)."""
    seed = int(seed)
    key = jax.random.fold_in(jax.random.key(seed & 0xFFFFFFFF), (seed >> 32) & 0xFFFFFFFF)
    step = keras.ops.convert_to_tensor(step_counter)
    key = jax.random.fold_in(key, step.astype("uint32"))
    shape = (int(batch), augment_ops.NUM_UNIFORMS)
    return tuple(jax.random.uniform(jax.random.fold_in(key, view), shape, dtype="float32")
                 for view in (0, 1))


def augmented_views(images, params, seed, step_counter):
    """The two augmented views of the raw ``images`` (uint8 [B, H, W, 3]) at step
    ``step_counter``: :func:`data_processing.augment_ops.augment_from_uniforms` of
    :func:`augmentation_uniforms`."""
    images = keras.ops.convert_to_tensor(images)
    u1, u2 = augmentation_uniforms(seed, step_counter, images.shape[0])
    return (augment_ops.augment_from_uniforms(images, u1, params),
            augment_ops.augment_from_uniforms(images, u2, params))


# ---------------------------------------------------------------------------
# Steps.
# ---------------------------------------------------------------------------

def trained_variables(model):
    """The variables in the order :func:`train_step` passes them to the optimizer:
    ``model.trainable_variables`` (Keras's JAX trainer's state)."""
    return model.trainable_variables



def _mapped(variables, values):
    return list(zip(variables, values))


def _collect(scope, variables, values):
    """The scope's value of each variable, or its old value if it was not assigned."""
    out = []
    for variable, value in zip(variables, values):
        new = scope.get_current_value(variable)
        out.append(value if new is None else new)
    return out


def train_step(model, state, data):
    """One stateless training step: ``(logs, new_state)`` (see the module docstring)."""
    trainable, non_trainable, optimizer_values, metrics_values = state
    trainable_vars = model.trainable_variables
    non_trainable_vars = model.non_trainable_variables
    optimizer = model.optimizer
    optimizer_vars = optimizer.variables
    metrics_vars = model.metrics_variables

    def state_mapping(trainable_values, non_trainable_values, optimizer_values,
                      metrics_values):
        """``(variable, value)`` of the whole state, for a ``StatelessScope``."""
        return (_mapped(trainable_vars, trainable_values)
                + _mapped(non_trainable_vars, non_trainable_values)
                + _mapped(optimizer_vars, optimizer_values)
                + _mapped(metrics_vars, metrics_values))

    # 0. The views (augment_on="device": two augmentations of the raw batch, drawn from
    #    (seed, step counter)); a stateless scope, so the counter reads its state value.
    with keras.StatelessScope(state_mapping=state_mapping(
            trainable, non_trainable, optimizer_values, metrics_values)):
        x1, x2, labels = model.unpack_batch(data)
    pairs = model.trainable_with_decay()
    index = {id(v): i for i, v in enumerate(trainable_vars)}
    if sorted(index) != sorted(id(v) for v, _ in pairs) or len(pairs) != len(index):
        raise ValueError(f"{type(model).__name__}.trainable_with_decay() must list every "
                         "trainable variable once. Received: "
                         f"{[v.path for v, _ in pairs]}")
    order = [index[id(v)] for v, _ in pairs]

    # 1. Forward, loss and gradients: a stateless call over the whole state.
    def forward(trainable_values, non_trainable_values):
        mapping = state_mapping(trainable_values, non_trainable_values, optimizer_values,
                                metrics_values)
        with keras.StatelessScope(state_mapping=mapping) as scope:
            loss, outputs = model.compute_ssl_loss(x1, x2, labels, training=True)
            scaled_loss = optimizer.scale_loss(loss)  # one replica per process
        new_non_trainable = _collect(scope, non_trainable_vars, non_trainable_values)
        return scaled_loss, (loss, outputs, new_non_trainable)

    (_, (loss, outputs, non_trainable)), grads = jax.value_and_grad(
        forward, has_aux=True)(list(trainable), list(non_trainable))
    grads = list(grads)

    # 2. Coupled decay and the method's adjustments, in trainable_with_decay's order
    #    (as the TF step), on the values before the update.
    with keras.StatelessScope(state_mapping=state_mapping(
            trainable, non_trainable, optimizer_values, metrics_values)):
        variables = [v for v, _ in pairs]
        ordered = [grads[i] for i in order]
        ordered = model.adjust_gradients(model.decayed_gradients(ordered, pairs), variables)
        ordered = [keras.ops.convert_to_tensor(g) for g in ordered]
    for i, g in zip(order, ordered):
        grads[i] = g

    # 3. The optimizer (built by Keras's JAX trainer on model.trainable_variables).
    built_order = [index.get(id(v)) for v in optimizer._trainable_variables]
    if built_order != list(range(len(trainable_vars))):
        raise ValueError("The optimizer must be built on model.trainable_variables, in "
                         "that order, under the JAX backend.")
    trainable, optimizer_values = optimizer.stateless_apply(optimizer_values, grads,
                                                            trainable)

    # 4. After-step updates and metrics on the updated state.
    mapping = state_mapping(trainable, non_trainable, optimizer_values, metrics_values)
    with jax.default_matmul_precision("highest"):
        with keras.StatelessScope(state_mapping=mapping) as scope:
            logs = model.finish_step(loss, outputs)
            logs = {name: keras.ops.convert_to_tensor(v) for name, v in logs.items()}
    new_state = (_collect(scope, trainable_vars, trainable),
                 _collect(scope, non_trainable_vars, non_trainable),
                 _collect(scope, optimizer_vars, optimizer_values),
                 _collect(scope, metrics_vars, metrics_values))
    return logs, new_state


def inference(model):
    """``images -> float32 outputs`` of ``model`` in inference mode, jitted once over
    the model's current variable values (read at each call, so later weight
    changes are seen)."""

    @jax.jit
    def forward(trainable, non_trainable, images):
        outputs, _ = model.stateless_call(trainable, non_trainable, images, training=False)
        return keras.ops.cast(outputs, "float32")

    def call(images):
        return forward([v.value for v in model.trainable_variables],
                       [v.value for v in model.non_trainable_variables], images)

    return call


def probe_functions(network, optimizer, loss_fn):
    """The linear probe's ``(step, predict)`` under JAX (what ``tf.function`` +
    GradientTape do under TensorFlow): ``loss_fn(network, features, labels) ->
    (loss, logits)``; the step adds ``network.linear.losses`` (the coupled L2) and
    applies ``optimizer`` statelessly, then writes the new values back."""
    variables = network.linear.trainable_variables

    def total_loss(values, features, labels):
        with keras.StatelessScope(state_mapping=_mapped(variables, values)):
            loss, logits = loss_fn(network, features, labels)
            penalty = sum(network.linear.losses) if network.linear.losses else 0.0
        return loss + penalty, (loss, logits)

    @jax.jit
    def jitted_step(values, optimizer_values, features, labels):
        (_, (loss, logits)), grads = jax.value_and_grad(total_loss, has_aux=True)(
            values, features, labels)
        values, optimizer_values = optimizer.stateless_apply(optimizer_values, grads, values)
        return values, optimizer_values, loss, logits

    def step(features, labels):
        values, optimizer_values, loss, logits = jitted_step(
            [v.value for v in variables], [v.value for v in optimizer.variables],
            features, labels)
        for v, new in zip(variables, values):
            v.assign(new)
        for v, new in zip(optimizer.variables, optimizer_values):
            v.assign(new)
        return loss, logits

    @jax.jit
    def jitted_predict(values, features):
        with keras.StatelessScope(state_mapping=_mapped(variables, values)):
            return network.head(features)

    return step, lambda features: jitted_predict([v.value for v in variables], features)


# ---------------------------------------------------------------------------
# A run's input and devices: in-memory arrays on one device.
# ---------------------------------------------------------------------------

def check_run(config):
    """What a run needs of JAX, checked before anything is touched: one device and a
    dataset of :mod:`data_processing.arrays` (tfds and ``tf.distribute`` are TensorFlow)."""
    from data_processing.arrays import NAMES
    if config.strategy != "default":
        raise ValueError(f"strategy={config.strategy!r} is tf.distribute (TensorFlow); "
                         "under KERAS_BACKEND=jax only 'default' (one device). "
                         f"Received: strategy={config.strategy!r}")
    if config.dataset not in NAMES:
        raise ValueError(f"dataset={config.dataset!r} is read with tensorflow-datasets; "
                         f"under KERAS_BACKEND=jax use one of {list(NAMES)} (a local copy "
                         f"as --dataset folder --data_dir ROOT). Received: "
                         f"dataset={config.dataset!r}")


class OneDevice:
    """The strategy of a JAX run: one device, no replicas (``tf.distribute`` is TF)."""

    num_replicas_in_sync = 1

    def scope(self):
        return contextlib.nullcontext()


def distribute_dataset(dataset, strategy):
    """``dataset`` (one device)."""
    del strategy
    return dataset


def make_strategy(name="default"):
    """:class:`OneDevice` (:func:`check_run` refuses any other strategy)."""
    del name
    return OneDevice()


def is_chief(strategy=None):
    """True: one process writes the results folder."""
    del strategy
    return True


def jit(fn):
    """``fn`` compiled by XLA (``jax.jit``)."""
    return jax.jit(fn)
