"""Small backend-agnostic helpers (``keras.ops``) shared by the losses and models."""

from keras import ops


def f32(x):
    """``x`` as float32 (losses and statistics stay float32 under mixed precision)."""
    return ops.cast(x, "float32")


def l2_normalize(x, axis=-1, epsilon=1e-12):
    """``x / max(|x|, sqrt(epsilon))`` along ``axis``: ``tf.math.l2_normalize``'s
    exact formula (``x * rsqrt(max(sum x^2, epsilon))``) in ``keras.ops``."""
    return x * ops.rsqrt(ops.maximum(ops.sum(ops.square(x), axis=axis, keepdims=True),
                                     epsilon))
