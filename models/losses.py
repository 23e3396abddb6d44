"""Loss functions: pure functions of tensors (``keras.ops``: any Keras backend).

All losses are computed in float32 whatever the compute dtype of their inputs,
so that a ``mixed_float16`` / ``mixed_bfloat16`` policy never degrades them.
"""

from keras import ops

from models.ops_util import f32, l2_normalize


def negative_cosine(p, z):
    """Per-example ``2 - 2 cos(p, sg(z))`` = ``|p/|p| - z/|z||^2`` (BYOL Eq. 2).

    ``z`` is the target and is wrapped in a stop-gradient. Returns shape [batch].
    """
    p = l2_normalize(f32(p))
    z = l2_normalize(ops.stop_gradient(f32(z)))
    return 2.0 - 2.0 * ops.sum(p * z, axis=-1)


def symmetric_loss(p1, z2, p2, z1):
    """Symmetrised loss ``L(p1, sg(z2)) + L(p2, sg(z1))``, each term a batch mean.

    ``L = 2 - 2 cos`` as in the official BYOL and DirectPred (luckmatters) code;
    the original TF2 reproduction halves this sum, which silently halves the
    learning rate, so it is not done here. Range [0, 8]. Returns a float32 scalar.
    """
    return ops.mean(negative_cosine(p1, z2)) + ops.mean(negative_cosine(p2, z1))


def squared_l2(p, z):
    """Per-example ``||p - sg(z)||^2``, un-normalised: the paper's linear-theory loss
    (Sec. 2, Eq. 1, without its 1/2). ``z`` is under stop-gradient. Shape [batch]."""
    p = ops.cast(p, "float32")
    z = ops.stop_gradient(ops.cast(z, "float32"))
    return ops.sum(ops.square(p - z), axis=-1)


def symmetric_l2_loss(p1, z2, p2, z1):
    """``L(p1, sg(z2)) + L(p2, sg(z1))`` with ``L`` = :func:`squared_l2`, each term a
    batch mean: in expectation ``4 J`` of the paper's Eq. 1. Returns a float32 scalar."""
    return ops.mean(squared_l2(p1, z2)) + ops.mean(squared_l2(p2, z1))


def isotropic_prediction(predictor, z, training=True):
    """``q(sg(z)) + z - sg(z)``: the value of the prediction ``q(z)``, with the gradient
    reaching ``z`` as if the predictor were the identity (IsoLoss, Halvagal, Laborieux &
    Zenke, NeurIPS 2023). Any loss of it then gives ``z`` the gradient that the ordinary
    loss gives ``p``: for a linear ``Wp`` the factor ``Wp^T``, whose eigenvalues multiply
    each mode's learning rate, is gone; ``Wp`` itself keeps its ordinary gradient.

    Equal to the z-gradient of fmi-basel/implicit-var-reg ``solo/losses/isoloss.py``:
    ``isoloss_func`` (cosine; there written with ``|Wp^{1/2} z|^2``) and ``isoloss_func_l2``.
    """
    z_stopped = ops.stop_gradient(z)
    return predictor(z_stopped, training=training) + (z - z_stopped)
