"""In-graph statistics used by the models' train steps (float32)."""

import tensorflow as tf


def normalized_std(z):
    """Collapse monitor: mean over dimensions of the batch std of ``z / |z|``.

    About ``1 / sqrt(d)`` for well-spread outputs, near 0 when collapsed
    (SimSiam paper, Sec. 4.1, Fig. 2).
    """
    z = tf.math.l2_normalize(tf.cast(z, tf.float32), axis=-1)
    return tf.reduce_mean(tf.math.reduce_std(z, axis=0))
