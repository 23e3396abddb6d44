"""The Keras backends this package trains under: one module each, with the same functions.

:func:`get` picks the module of the current Keras backend (``KERAS_BACKEND``), once per
call site; nothing else in the package names a backend. Each module provides:

* compilation: ``jit(fn)`` (``tf.function`` / ``jax.jit``);
* the step: ``train_step(model, *args)`` (what ``SSLModel.train_step`` runs),
  ``trained_variables(model)`` (the optimizer's build order), ``inference(encoder)``
  (a compiled ``images -> float32 features``), ``probe_functions(network, optimizer,
  loss_fn)`` (the linear probe's ``(step, predict)``);
* device-side augmentation: ``augmented_views(images, params, seed, step_counter)``;
* replicas: ``cross_replica_gather``, ``cross_replica_sum``, ``replica_offset``,
  ``num_replicas``, ``across_workers``, ``use_synchronized_bn`` (identities on one
  device);
* a run's input and devices: ``check_run(config)``, ``load_dataset``,
  ``pretraining_dataset``, ``evaluation_dataset``, ``probe_images``,
  ``distribute_dataset``, ``make_strategy``, ``is_chief`` and ``WRITES_TENSORBOARD``.

:mod:`backends.tensorflow` imports TensorFlow; :mod:`backends.jax` never does.
"""

import importlib

import keras

#: The Keras backends with a module here.
NAMES = ("tensorflow", "jax")


def get(name=None):
    """The module of backend ``name`` (default: the current Keras backend). Raises
    ``ValueError`` for any other backend."""
    name = keras.backend.backend() if name is None else name
    if name not in NAMES:
        raise ValueError("This package trains under the tensorflow or jax Keras backend. "
                         f"Received: KERAS_BACKEND={name!r}")
    return importlib.import_module(f"backends.{name}")
