"""Projector and predictor heads, as in the official DirectPred code
(facebookresearch/luckmatters ``ssl/real-dataset/models/mlp_head.py``).

- projector ``mlp``: Dense(hidden) -> BatchNorm (no affine) -> ReLU -> Dense(out);
  ``deeper`` adds one more Dense -> BN -> ReLU block (the original TF2
  reproduction's ``get_deeper_projection``).
- predictor ``mlp``: Dense(hidden) -> BatchNorm (affine or not) -> ReLU -> Dense(out)
  (BYOL, SimSiam); ``linear``: one square Dense without bias, trained by SGD (the paper's
  "SGD baseline"); ``directpred`` / ``directcopy`` / ``directset``: the same square layer,
  set from the correlation of the projector outputs (paper Sec. 4) and, with ``trainable``,
  trained by the optimizer between two settings (freq > 1).

BatchNorm of the heads is synchronised across replicas like the encoders'
(``synchronized=None``: when the current ``tf.distribute`` strategy has more than
one replica), so that the heads see the statistics of the global batch.
"""

import keras
from keras import layers

import backends
from config.methods import COMPUTED_PREDICTORS

#: One square bias-free Dense: trained (``linear``) or set from F (every computed predictor
#: that ``config.methods.PREDICTOR_SPECS`` declares).
LINEAR_PREDICTORS = ("linear", *COMPUTED_PREDICTORS)


def _hidden_block(x, units, prefix, index, affine, dtype, synchronized):
    x = layers.Dense(units, name=f"{prefix}_dense{index}", dtype=dtype)(x)
    x = layers.BatchNormalization(center=affine, scale=affine, name=f"{prefix}_bn{index}",
                                  dtype=dtype, synchronized=synchronized)(x)
    return layers.ReLU(name=f"{prefix}_relu{index}", dtype=dtype)(x)


def projector(input_dim, *, hidden_dim=512, output_dim=128, kind="mlp", dtype=None,
              name="projector", synchronized=None):
    """Projector head ``g``: features -> z (``kind`` ``mlp``, ``deeper`` or ``none``:
    the identity, for the linear theory, which needs ``output_dim == input_dim``).
    ``synchronized``: BatchNorm across replicas (``None``: when distributed)."""
    if kind not in ("mlp", "deeper", "none"):
        raise ValueError(f"Unknown projector {kind!r}. Valid: ['mlp', 'deeper', 'none']")
    if kind == "none":
        if output_dim != input_dim:
            raise ValueError("projector='none' (identity) needs projection_dim equal to "
                             f"the encoder's feature size {input_dim}. Received: "
                             f"projection_dim={output_dim!r}")
        inputs = keras.Input((input_dim,), name="features")
        return keras.Model(inputs, layers.Identity(name=f"{name}_identity")(inputs),
                           name=name)
    synchronized = backends.get().use_synchronized_bn(synchronized)
    inputs = keras.Input((input_dim,), name="features")
    x = _hidden_block(inputs, hidden_dim, name, 1, affine=False, dtype=dtype,
                      synchronized=synchronized)
    if kind == "deeper":
        x = _hidden_block(x, hidden_dim, name, 2, affine=False, dtype=dtype,
                          synchronized=synchronized)
    outputs = layers.Dense(output_dim, name=f"{name}_out", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


def predictor(dim, *, hidden_dim=512, kind="mlp", dtype=None, name="predictor",
              synchronized=None, bn_affine=False, trainable=None):
    """Predictor head ``q``: z -> p. Linear kinds are one ``dim x dim`` Dense, no bias.

    Layer names start with ``name + "_"`` so that variable paths identify the
    head (the per-module learning rate matches ``predictor_.*``).

    For ``directpred`` / ``directcopy`` / ``directset`` the kernel is assigned by
    :class:`models.SiameseNetwork` from F; the model is trainable only with
    ``trainable=True`` (trained between two settings). ``bn_affine``: the MLP's BatchNorm
    has a scale and shift. ``synchronized``: as for :func:`projector`.
    """
    inputs = keras.Input((dim,), name="z")
    if kind == "mlp":
        x = _hidden_block(inputs, hidden_dim, name, 1, affine=bn_affine, dtype=dtype,
                          synchronized=backends.get().use_synchronized_bn(synchronized))
        outputs = layers.Dense(dim, name=f"{name}_out", dtype=dtype)(x)
    elif kind in LINEAR_PREDICTORS:
        outputs = layers.Dense(dim, use_bias=False, name=f"{name}_linear", dtype=dtype)(inputs)
    else:
        raise ValueError(f"Unknown predictor {kind!r}. "
                         f"Valid: {['mlp', *LINEAR_PREDICTORS]}")
    model = keras.Model(inputs, outputs, name=name)
    if kind in COMPUTED_PREDICTORS:
        model.trainable = bool(trainable)
    return model


def dense_kernels(model):
    """The kernels of the Dense layers of a head, in order."""
    return [layer.kernel for layer in model.layers if isinstance(layer, layers.Dense)]
