"""``tf.distribute`` strategies by name (``Config.strategy``, ``train.py --strategy``).

Under any strategy, ``experiments/training.py`` builds the model, its optimizer
and metrics inside ``strategy.scope()``, and Keras's ``fit`` then splits every
batch of the ``tf.data`` pipeline across the replicas: ``Config.batch_size`` is
the *global* batch. BatchNorm is synchronised across replicas (encoders and
heads), and the losses that need the whole batch gather across replicas (see
``models/base.py``).
"""

import tensorflow as tf

from config import STRATEGIES


def make_strategy(name="default"):
    """The ``tf.distribute.Strategy`` called ``name``.

    - ``default``: the current (default, one-device) strategy.
    - ``mirrored``: ``MirroredStrategy`` over every local GPU (without GPUs: over
      the logical CPU devices, normally one).
    - ``multiworker``: ``MultiWorkerMirroredStrategy``; the cluster and this
      worker's role come from the ``TF_CONFIG`` environment variable.
    - ``tpu``: ``TPUStrategy`` on the TPU found by ``TPUClusterResolver``
      (``ValueError`` when there is none).
    """
    if name not in STRATEGIES:
        raise ValueError(f"Unknown strategy {name!r}. Valid: {list(STRATEGIES)}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as error:
        raise ValueError(f"strategy='tpu' found no TPU: {error}") from None
    return tf.distribute.TPUStrategy(resolver)


def is_chief(strategy=None):
    """Whether this process writes the results: ``False`` only on the non-chief
    workers of ``MultiWorkerMirroredStrategy`` (``TF_CONFIG``'s chief, or worker 0)."""
    strategy = strategy or tf.distribute.get_strategy()
    return bool(strategy.extended.should_checkpoint)
