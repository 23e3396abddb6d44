"""In-graph statistics used by the models' train steps (float32, ``keras.ops``)."""

from keras import ops

from models.ops_util import f32, l2_normalize


def normalized_std(z):
    """Collapse monitor: mean over dimensions of the batch std of ``z / |z|``.

    About ``1 / sqrt(d)`` for well-spread outputs, near 0 when collapsed
    (SimSiam paper, Sec. 4.1, Fig. 2).
    """
    z = l2_normalize(f32(z))
    return ops.mean(ops.std(z, axis=0))
