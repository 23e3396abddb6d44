"""Encoders: functional Keras models mapping [B, S, S, 3] images to pooled [B, D] features.

``Config.backbone`` picks one of :data:`BACKBONES`; ``Config.stem`` (``cifar``
up to 64 px, else ``imagenet``) adapts the first layers to small images the way
the published CIFAR variants do. ``width`` multiplies every convolution's
channels (1 = the published network). D is :func:`feature_dim` (at width 1):

==================  =========================================================  =====
backbone            ``stem="cifar"`` / ``stem="imagenet"``                        D
==================  =========================================================  =====
resnet18, resnet34  ours (He et al. 2016), basic blocks; cifar: 3x3 stride-1     512
                    conv, no max-pool; imagenet: 7x7 stride-2 conv + max-pool
resnet50            ours, bottleneck blocks (torchvision "v1.5": stride in the  2048
                    3x3 conv, no conv biases, as the SSL papers' ResNet-50),
                    same two stems
vgg16               ``keras.applications.VGG16`` convs (Simonyan & Zisserman     512
                    2015, configuration D) with BatchNorm inserted after every
                    conv (VGG-16-BN, as torchvision ``vgg16_bn`` and the CIFAR
                    variants); no stem to adapt: both stems are the same network
densenet121         ``keras.applications.DenseNet121`` (Huang et al. 2017);     1024
                    cifar: the 7x7 stride-2 conv + max-pool become one 3x3
                    stride-1 conv (64 channels), as the CIFAR DenseNets
efficientnet_b0     ``keras.applications.EfficientNetB0`` (Tan & Le 2019)       1280
                    without its Rescaling/Normalization input layers (the data
                    pipeline normalises); cifar: stem conv at stride 1
alexnet             ours: the 5-conv "SmallAlexNet" of Wang & Isola (2020,       192
                    after Tian et al.'s CMC; Krizhevsky et al. 2012 layout with
                    3x3 convs and BN), global-average-pooled; one variant
==================  =========================================================  =====

The keras.applications networks are built once with ``weights=None,
include_top=False, pooling="avg"`` and then rebuilt by
:func:`keras.models.clone_model`, which sets per layer the dtype policy, the
BatchNorm ``synchronized`` flag, the width and the stem changes above, and gives
the input and pooling layers fixed names (``images``, ``pool``), so that two
encoders of one model (online + target) have identical layer names and
variable order. They need ``image_size >= 32`` (Keras's minimum). Their
``width`` scales each convolution's filters (rounded), not EfficientNet's own
width coefficient (which rounds to multiples of 8); EfficientNet-B0 keeps its
stochastic-depth dropout, also in the (training-mode) target branch.

Synchronised BatchNorm: ``build_encoder(..., synchronized=None)`` makes every
BatchNormalization layer ``synchronized=True`` when the current
``tf.distribute`` strategy has more than one replica (or when asked to).
"""

import functools

import keras
from keras import layers

import backends
from models import network_constants
from models.conv import PointwiseConv2D

#: The image encoders ([B, S, S, 3] -> [B, D]).
IMAGE_BACKBONES = ("resnet18", "resnet34", "resnet50", "vgg16", "densenet121",
                   "efficientnet_b0", "alexnet")
#: Valid ``Config.backbone`` values (mirrored by ``config.BACKBONES``); ``linear`` is
#: the linear theory's vector encoder (``dataset="gaussian"``).
BACKBONES = IMAGE_BACKBONES + ("linear",)

_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3)}
_BOTTLENECK = {"resnet50"}
_STEMS = ("cifar", "imagenet")
_MIN_APPLICATION_SIZE = 32
_ALEXNET_MIN_SIZE = 15  # three 3x3 stride-2 "valid" max-pools


def _channels(base, width):
    return max(1, int(round(base * width)))


def _check_common(image_size, width, stem):
    if stem not in _STEMS:
        raise ValueError(f"Unknown stem {stem!r}. Valid: {list(_STEMS)}")
    if not width > 0:
        raise ValueError(f"width must be > 0. Received: width={width!r}")
    if image_size < 1:
        raise ValueError(f"image_size must be >= 1. Received: image_size={image_size!r}")


def _bn(name, dtype, synchronized):
    return layers.BatchNormalization(name=name, dtype=dtype, synchronized=synchronized)


# ---------------------------------------------------------------------------
# ResNet (ours): basic blocks (18, 34) and bottleneck blocks (50)
# ---------------------------------------------------------------------------

def _conv_bn(x, filters, kernel, stride, name, dtype, synchronized, relu=True):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv", dtype=dtype)(x)
    x = _bn(f"{name}_bn", dtype, synchronized)(x)
    return layers.ReLU(name=f"{name}_relu", dtype=dtype)(x) if relu else x


def _basic_block(x, filters, stride, name, dtype, synchronized=False):
    """Two 3x3 convolutions with BN and an identity (or 1x1 projection) shortcut."""
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv1", dtype=dtype)(x)
    y = _bn(f"{name}_bn1", dtype, synchronized)(y)
    y = layers.ReLU(name=f"{name}_relu1", dtype=dtype)(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      name=f"{name}_conv2", dtype=dtype)(y)
    y = _bn(f"{name}_bn2", dtype, synchronized)(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = PointwiseConv2D(filters, 1, strides=stride, use_bias=False,
                                   name=f"{name}_down_conv", dtype=dtype)(shortcut)
        shortcut = _bn(f"{name}_down_bn", dtype, synchronized)(shortcut)
    y = layers.Add(name=f"{name}_add", dtype=dtype)([y, shortcut])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(y)


def _bottleneck_block(x, filters, stride, name, dtype, synchronized=False):
    """1x1 -> 3x3 (stride here, torchvision "v1.5") -> 1x1 (4 * filters) with BN,
    and an identity (or 1x1 projection) shortcut (He et al. 2016, Fig. 5)."""
    out = 4 * filters
    shortcut = x
    y = layers.Conv2D(filters, 1, use_bias=False, name=f"{name}_conv1", dtype=dtype)(x)
    y = _bn(f"{name}_bn1", dtype, synchronized)(y)
    y = layers.ReLU(name=f"{name}_relu1", dtype=dtype)(y)
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                      name=f"{name}_conv2", dtype=dtype)(y)
    y = _bn(f"{name}_bn2", dtype, synchronized)(y)
    y = layers.ReLU(name=f"{name}_relu2", dtype=dtype)(y)
    y = layers.Conv2D(out, 1, use_bias=False, name=f"{name}_conv3", dtype=dtype)(y)
    y = _bn(f"{name}_bn3", dtype, synchronized)(y)
    if stride != 1 or shortcut.shape[-1] != out:
        shortcut = PointwiseConv2D(out, 1, strides=stride, use_bias=False,
                                   name=f"{name}_down_conv", dtype=dtype)(shortcut)
        shortcut = _bn(f"{name}_down_bn", dtype, synchronized)(shortcut)
    y = layers.Add(name=f"{name}_add", dtype=dtype)([y, shortcut])
    return layers.ReLU(name=f"{name}_out", dtype=dtype)(y)


def resnet(depth="resnet18", *, image_size=32, width=1.0, stem="cifar", dtype=None,
           name=None, synchronized=False):
    """Builds a ResNet encoder (He et al. 2016) mapping [B, S, S, 3] images to features.

    Args:
        depth: ``"resnet18"``, ``"resnet34"`` (basic blocks) or ``"resnet50"``
            (bottleneck blocks, 4x wider outputs).
        image_size: input height and width.
        width: channel multiplier (1 = the published 64-128-256-512 network);
            smaller values make CPU-scale runs possible.
        stem: ``"cifar"`` (3x3 stride-1 conv, no max-pool) or ``"imagenet"``
            (7x7 stride-2 conv + 3x3 stride-2 max-pool, e.g. STL-10 at 96 px).
        dtype: Keras dtype policy name, e.g. ``"mixed_bfloat16"``.
        synchronized: BatchNorm statistics over all replicas.
    """
    if depth not in _BLOCKS:
        raise ValueError(f"Unknown ResNet depth {depth!r}. Valid: {sorted(_BLOCKS)}")
    _check_common(image_size, width, stem)
    block_fn = _bottleneck_block if depth in _BOTTLENECK else _basic_block
    inputs = keras.Input((image_size, image_size, 3), name="images")
    c = _channels(64, width)
    if stem == "cifar":
        x = layers.Conv2D(c, 3, padding="same", use_bias=False, name="stem_conv",
                          dtype=dtype)(inputs)
    else:
        x = layers.Conv2D(c, 7, strides=2, padding="same", use_bias=False,
                          name="stem_conv", dtype=dtype)(inputs)
    x = _bn("stem_bn", dtype, synchronized)(x)
    x = layers.ReLU(name="stem_relu", dtype=dtype)(x)
    if stem == "imagenet":
        x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool",
                                dtype=dtype)(x)
    for stage, blocks in enumerate(_BLOCKS[depth]):
        filters = _channels(64 * 2 ** stage, width)
        for block in range(blocks):
            stride = 2 if (stage > 0 and block == 0) else 1
            x = block_fn(x, filters, stride, f"stage{stage + 1}_block{block + 1}", dtype,
                         synchronized)
    outputs = layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name or depth)


def resnet18(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="resnet18",
             synchronized=False):
    """CIFAR-stem (default) ResNet-18 encoder; 512 * width pooled features."""
    return resnet("resnet18", image_size=image_size, width=width, stem=stem, dtype=dtype,
                  name=name, synchronized=synchronized)


def resnet34(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="resnet34",
             synchronized=False):
    """CIFAR-stem (default) ResNet-34 encoder; 512 * width pooled features."""
    return resnet("resnet34", image_size=image_size, width=width, stem=stem, dtype=dtype,
                  name=name, synchronized=synchronized)


def resnet50(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="resnet50",
             synchronized=False):
    """CIFAR-stem (default) ResNet-50 encoder; 2048 * width pooled features."""
    return resnet("resnet50", image_size=image_size, width=width, stem=stem, dtype=dtype,
                  name=name, synchronized=synchronized)


# ---------------------------------------------------------------------------
# AlexNet (ours): CIFAR/STL-sized, 5 convolutions with BN
# ---------------------------------------------------------------------------

def alexnet(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="alexnet",
            synchronized=False):
    """Small AlexNet encoder (Krizhevsky et al. 2012) for 32-96 px images.

    The convolutional trunk of the "SmallAlexNet" that Wang & Isola (ICML 2020,
    alignment/uniformity) adapted from Tian et al.'s CMC (2020): five 3x3 conv ->
    BN -> ReLU blocks with 96-192-384-384-192 channels and a 3x3 stride-2 max-pool
    after blocks 1, 2 and 5. Their fully connected layers are left to the
    projector: the features are the global average pool of the last block,
    ``192 * width`` dimensions. ``stem`` is accepted for a uniform interface and
    ignored (one network for both).
    """
    _check_common(image_size, width, stem)
    if image_size < _ALEXNET_MIN_SIZE:
        raise ValueError(f"alexnet needs image_size >= {_ALEXNET_MIN_SIZE}. "
                         f"Received: image_size={image_size!r}")
    inputs = keras.Input((image_size, image_size, 3), name="images")
    x = inputs
    for i, (filters, pool) in enumerate(
            [(96, True), (192, True), (384, False), (384, False), (192, True)], start=1):
        x = _conv_bn(x, _channels(filters, width), 3, 1, f"conv{i}", dtype, synchronized)
        if pool:
            x = layers.MaxPooling2D(3, strides=2, name=f"conv{i}_pool", dtype=dtype)(x)
    outputs = layers.GlobalAveragePooling2D(name="pool", dtype=dtype)(x)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# keras.applications networks, rebuilt by clone_model
# ---------------------------------------------------------------------------

_APPLICATIONS = {
    "vgg16": "VGG16",
    "densenet121": "DenseNet121",
    "efficientnet_b0": "EfficientNetB0",
}


@functools.lru_cache(maxsize=None)
def _template(backbone):
    """The keras.applications network, built once per process; only its layer
    configs and graph are read (``clone_model`` creates new weights)."""
    constructor = getattr(keras.applications, _APPLICATIONS[backbone])
    return constructor(weights=None, include_top=False, pooling="avg",
                       input_shape=(_MIN_APPLICATION_SIZE, _MIN_APPLICATION_SIZE, 3))


def _stem_edits(backbone, stem, template):
    """``{layer name: None (-> Identity) | {config overrides}}`` and
    ``{layer name: new name}`` for one keras.applications network."""
    edits, renames = {}, {template.layers[-1].name: "pool"}  # pooling="avg"
    if backbone == "densenet121":
        pads = [l.name for l in template.layers if isinstance(l, layers.ZeroPadding2D)]
        renames.update({pads[0]: "conv1_pad", pads[1]: "pool1_pad"})
        if stem == "cifar":  # 3x3 stride-1 conv, no max-pool (Huang et al. 2017, CIFAR)
            edits.update({pads[0]: None, pads[1]: None, "pool1": None,
                          "conv1_conv": dict(kernel_size=(3, 3), strides=(1, 1),
                                             padding="same")})
    elif backbone == "efficientnet_b0":
        for layer in template.layers:  # input scaling: our pipeline normalises
            if isinstance(layer, layers.Rescaling):
                edits[layer.name], renames[layer.name] = None, "input_rescaling"
            elif isinstance(layer, layers.Normalization):
                edits[layer.name], renames[layer.name] = None, "input_normalization"
        if stem == "cifar":
            edits.update({"stem_conv_pad": None,
                          "stem_conv": dict(strides=(1, 1), padding="same")})
    return edits, renames


def keras_application(backbone, *, image_size=32, width=1.0, stem="cifar", dtype=None,
                      name=None, synchronized=False):
    """VGG-16(-BN), DenseNet-121 or EfficientNet-B0 from ``keras.applications``,
    adapted as described in the module docstring."""
    if backbone not in _APPLICATIONS:
        raise ValueError(f"Unknown keras.applications backbone {backbone!r}. "
                         f"Valid: {sorted(_APPLICATIONS)}")
    _check_common(image_size, width, stem)
    if image_size < _MIN_APPLICATION_SIZE:
        raise ValueError(f"{backbone} needs image_size >= {_MIN_APPLICATION_SIZE} "
                         f"(keras.applications). Received: image_size={image_size!r}")
    policy = dtype if dtype is not None else keras.config.dtype_policy().name
    template = _template(backbone)
    edits, renames = _stem_edits(backbone, stem, template)
    vgg_bn = backbone == "vgg16"

    def clone_function(layer):
        config = layer.get_config()
        old = config["name"]
        if old in edits and edits[old] is None:
            return layers.Identity(name=renames.get(old, old), dtype=policy)
        config.update(edits.get(old) or {})
        config["name"] = renames.get(old, old)
        config["dtype"] = policy
        if isinstance(layer, layers.BatchNormalization):
            config["synchronized"] = synchronized
        if isinstance(layer, layers.Conv2D):
            config["filters"] = _channels(config["filters"], width)
            if vgg_bn:  # conv -> BN -> ReLU: the bias is BN's beta
                config.update(activation="linear", use_bias=False)
        if isinstance(layer, layers.Reshape) and width != 1:  # EfficientNet's SE
            shape = tuple(config["target_shape"])
            config["target_shape"] = (*shape[:-1], _channels(shape[-1], width))
        return layer.__class__.from_config(config)

    def call_function(layer, *args, **kwargs):
        out = layer(*args, **kwargs)
        if vgg_bn and isinstance(layer, layers.Conv2D):
            out = _bn(f"{layer.name}_bn", policy, synchronized)(out)
            out = layers.ReLU(name=f"{layer.name}_relu", dtype=policy)(out)
        return out

    inputs = keras.Input((image_size, image_size, 3), name="images")
    clone = keras.models.clone_model(template, input_tensors=inputs,
                                     clone_function=clone_function,
                                     call_function=call_function)
    return keras.Model(inputs, clone.outputs[0], name=name or backbone)


def vgg16(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="vgg16",
          synchronized=False):
    """VGG-16 with BN (Simonyan & Zisserman 2015); 512 * width pooled features."""
    return keras_application("vgg16", image_size=image_size, width=width, stem=stem,
                             dtype=dtype, name=name, synchronized=synchronized)


def densenet121(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="densenet121",
                synchronized=False):
    """DenseNet-121 (Huang et al. 2017); 1024 pooled features at width 1."""
    return keras_application("densenet121", image_size=image_size, width=width, stem=stem,
                             dtype=dtype, name=name, synchronized=synchronized)


def efficientnet_b0(*, image_size=32, width=1.0, stem="cifar", dtype=None,
                    name="efficientnet_b0", synchronized=False):
    """EfficientNet-B0 (Tan & Le 2019); 1280 * width pooled features."""
    return keras_application("efficientnet_b0", image_size=image_size, width=width,
                             stem=stem, dtype=dtype, name=name, synchronized=synchronized)


def linear(*, image_size=32, width=1.0, stem="cifar", dtype=None, name="linear",
           synchronized=False):
    """The paper's linear encoder ``W`` (Sec. 2): one bias-free Dense, no BatchNorm,
    on flat vectors of length ``image_size`` (``dataset="gaussian"``), with
    ``round(image_size * width)`` outputs. ``stem`` and ``synchronized`` do not
    apply (no convolution, no BatchNorm)."""
    _check_common(image_size, width, stem)
    inputs = keras.Input((image_size,), name="images")
    outputs = layers.Dense(_channels(image_size, width), use_bias=False, name="linear",
                           dtype=dtype)(inputs)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------------------
# Selection by name / Config
# ---------------------------------------------------------------------------

_BUILDERS = {
    "resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "vgg16": vgg16,
    "densenet121": densenet121, "efficientnet_b0": efficientnet_b0, "alexnet": alexnet,
    "linear": linear,
}

_FEATURE_DIMS = {
    "resnet18": lambda w: _channels(512, w),
    "resnet34": lambda w: _channels(512, w),
    "resnet50": lambda w: 4 * _channels(512, w),
    "vgg16": lambda w: _channels(512, w),
    # last transition (512) + 16 layers of the last dense block, growth rate 32
    "densenet121": lambda w: _channels(512, w) + 16 * _channels(32, w),
    "efficientnet_b0": lambda w: _channels(1280, w),
    "alexnet": lambda w: _channels(192, w),
}


def _check_backbone(backbone):
    if backbone not in _BUILDERS:
        raise ValueError(f"Unknown backbone {backbone!r}. Valid choices: {list(BACKBONES)}")


def feature_dim(config_or_backbone, width=1.0):
    """Size D of the pooled features of ``build_encoder(config)`` (or of a backbone
    name at ``width``), without building the network."""
    if isinstance(config_or_backbone, str):
        backbone = config_or_backbone
    else:
        backbone, width = config_or_backbone.backbone, config_or_backbone.width
    _check_backbone(backbone)
    if backbone == "linear":  # its size depends on the input length (image_size)
        if isinstance(config_or_backbone, str):
            raise ValueError("feature_dim of backbone='linear' needs the Config (its "
                             "output size is image_size * width). Received: 'linear'")
        return _channels(config_or_backbone.image_size, width)
    return _FEATURE_DIMS[backbone](width)


def build(backbone, *, image_size=32, width=1.0, stem="cifar", dtype=None, name=None,
          synchronized=False):
    """The encoder called ``backbone`` (one of :data:`BACKBONES`)."""
    _check_backbone(backbone)
    return _BUILDERS[backbone](image_size=image_size, width=width, stem=stem, dtype=dtype,
                               name=name or backbone, synchronized=synchronized)


def build_encoder(config, dtype=None, name="encoder", synchronized=None):
    """The encoder a :class:`config.Config` asks for (``backbone``, ``image_size``,
    ``width``, ``resolved_stem``); ``dtype`` is a Keras dtype policy name.

    ``synchronized=None`` turns on synchronised BatchNorm when the current
    ``tf.distribute`` strategy has more than one replica. Initialisers and BatchNorm
    constants: ``config.weight_init``, ``bn_epsilon``, ``bn_momentum``
    (:mod:`models.network_constants`).
    """
    encoder = build(config.backbone, image_size=config.image_size, width=config.width,
                    stem=config.resolved_stem, dtype=dtype, name=name,
                    synchronized=backends.get().use_synchronized_bn(synchronized))
    if config.backbone == "linear":
        return encoder  # the theory's W: no BN, its own init (experiments/theory)
    return network_constants.apply(encoder, config, backbone=config.backbone)
