"""Encoders: ResNet-18/34 with a CIFAR or an ImageNet stem, as functional Keras models.

The CIFAR variant (He et al. 2016, as used by SimCLR/BYOL/DirectPred on
CIFAR-10) replaces the 7x7 stride-2 stem and max-pool by one 3x3 stride-1
convolution. The output is the global-average-pooled feature vector
(512 * width dimensions; 512 for the published network).
"""

import keras
from keras import layers

_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3)}


def _channels(base, width):
    return max(1, int(round(base * width)))


def _basic_block(x, filters, stride, name, dtype):
    """Two 3x3 convolutions with BN and an identity (or 1x1 projection) shortcut."""
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1", dtype=dtype)(x)
    y = layers.BatchNormalization(name=f"{name}_bn1", dtype=dtype)(y)
    y = layers.ReLU(name=f"{name}_relu1", dtype=dtype)(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      name=f"{name}_conv2", dtype=dtype)(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", dtype=dtype)(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False,
                                 name=f"{name}_down_conv", dtype=dtype)(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_down_bn", dtype=dtype)(shortcut)
    y = layers.Add(name=f"{name}_add", dtype=dtype)([y, shortcut])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(y)


def resnet(depth="resnet18", *, image_size=32, width=1.0, stem="cifar", dtype=None,
           name=None):
    """Builds a ResNet encoder mapping [B, S, S, 3] float images to pooled features.

    Args:
        depth: ``"resnet18"`` or ``"resnet34"``.
        image_size: input height and width.
        width: channel multiplier (1 = the published 64-128-256-512 network);
            smaller values make CPU-scale runs possible.
        stem: ``"cifar"`` (3x3 stride-1 conv, no max-pool) or ``"imagenet"``
            (7x7 stride-2 conv + 3x3 stride-2 max-pool, e.g. STL-10 at 96 px).
        dtype: Keras dtype policy name, e.g. ``"mixed_bfloat16"``.
    """
    if depth not in _BLOCKS:
        raise ValueError(f"Unknown ResNet depth {depth!r}. Valid: {sorted(_BLOCKS)}")
    if stem not in ("cifar", "imagenet"):
        raise ValueError(f"Unknown stem {stem!r}. Valid: ['cifar', 'imagenet']")
    if not width > 0:
        raise ValueError(f"width must be > 0. Received: width={width!r}")
    inputs = keras.Input((image_size, image_size, 3), name="images")
    c = _channels(64, width)
    if stem == "cifar":
        x = layers.Conv2D(c, 3, padding="same", use_bias=False, name="stem_conv",
                          dtype=dtype)(inputs)
    else:
        x = layers.Conv2D(c, 7, strides=2, padding="same", use_bias=False,
                          name="stem_conv", dtype=dtype)(inputs)
    x = layers.BatchNormalization(name="stem_bn", dtype=dtype)(x)
    x = layers.ReLU(name="stem_relu", dtype=dtype)(x)
    if stem == "imagenet":
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool",
                                dtype=dtype)(x)
    for stage, blocks in enumerate(_BLOCKS[depth]):
        filters = _channels(64 * 2 ** stage, width)
        for block in range(blocks):
            stride = 2 if (stage > 0 and block == 0) else 1
            x = _basic_block(x, filters, stride, f"stage{stage + 1}_block{block + 1}", dtype)
    outputs = layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name or depth)


def resnet18(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="resnet18"):
    """CIFAR-stem (default) ResNet-18 encoder; 512 * width pooled features."""
    return resnet("resnet18", image_size=image_size, width=width, stem=stem, dtype=dtype,
                  name=name)


def resnet34(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="resnet34"):
    """CIFAR-stem (default) ResNet-34 encoder; 512 * width pooled features."""
    return resnet("resnet34", image_size=image_size, width=width, stem=stem, dtype=dtype,
                  name=name)


def build_encoder(config, dtype=None, name="encoder"):
    """The encoder a :class:`config.Config` asks for."""
    return resnet(config.backbone, image_size=config.image_size, width=config.width,
                  stem=config.resolved_stem, dtype=dtype, name=name)
