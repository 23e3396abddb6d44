"""Initialisers and BatchNorm constants of the official (PyTorch) networks, applied to Keras ones.

The paper's runs (official ``ssl/real-dataset``, PyTorch 1.7) build torchvision's ResNet-18
and ``nn.Linear`` / ``nn.BatchNorm1d`` heads, so their networks start from PyTorch's
initialisers and normalise with PyTorch's BatchNorm constants, not Keras's:

===================  ==========================================  ============================
layer                ``weight_init="torch"``                     Keras default
===================  ==========================================  ============================
ResNet convolution   N(0, 2 / fan_out) (torchvision ``ResNet``:  Glorot uniform
                     ``kaiming_normal_(mode="fan_out")``)
CIFAR stem conv,     U(+-1 / sqrt(fan_in)) (``nn.Conv2d`` /       Glorot uniform kernel,
other convs, Dense   ``nn.Linear`` default: ``kaiming_uniform_``  zero bias
                     with a = sqrt(5)); bias U(+-1 / sqrt(fan_in))
BatchNorm            eps 1e-5, momentum 0.1 (Keras 0.9)          eps 1e-3, momentum 0.99
===================  ==========================================  ============================

The CIFAR stem conv is the one the official ``ResNet18`` replaces after torchvision has
initialised the network, so it keeps ``nn.Conv2d``'s default. Depthwise convolutions
(EfficientNet) and layers other than ``Conv2D`` / ``Dense`` / ``BatchNormalization`` keep
Keras's initialisers. ``Config.weight_init``, ``bn_epsilon``, ``bn_momentum``
(docs/recipes.md).
"""

import math

import keras
from keras import layers

#: Backbones whose convolutions torchvision initialises Kaiming-normal (fan-out).
_TORCHVISION_RESNETS = ("resnet18", "resnet34", "resnet50")


def _uniform(shape, bound, dtype):
    return keras.random.uniform(shape, minval=-bound, maxval=bound, dtype=dtype)


def torch_default(layer):
    """``nn.Conv2d`` / ``nn.Linear`` default init of a built Conv2D or Dense layer:
    kernel and bias ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    kernel = layer.kernel
    fan_in = math.prod(kernel.shape[:-1])
    bound = 1.0 / math.sqrt(fan_in)
    kernel.assign(_uniform(kernel.shape, bound, kernel.dtype))
    if layer.bias is not None:
        layer.bias.assign(_uniform(layer.bias.shape, bound, layer.bias.dtype))


def kaiming_normal_fan_out(layer):
    """torchvision ResNet's convolution init: ``N(0, 2 / fan_out)``, fan_out = k*k*out."""
    kernel = layer.kernel
    fan_out = math.prod(kernel.shape[:-2]) * kernel.shape[-1]
    std = math.sqrt(2.0 / fan_out)
    kernel.assign(keras.random.normal(kernel.shape, stddev=std, dtype=kernel.dtype))


def apply(model, config, backbone=None):
    """Sets ``config``'s BatchNorm constants on every BN layer of ``model`` and, with
    ``weight_init="torch"``, re-draws its Conv2D / Dense weights as PyTorch would.
    ``backbone``: the model is that encoder (its convolutions get torchvision's init when it
    is a ResNet); ``None`` for a head. Draws from Keras's global seed generator, so a run
    seeded with ``keras.utils.set_random_seed`` is reproducible."""
    resnet = backbone in _TORCHVISION_RESNETS
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            layer.epsilon = config.bn_epsilon
            layer.momentum = config.bn_momentum
        elif config.weight_init == "torch" and isinstance(layer, (layers.Conv2D, layers.Dense)):
            cifar_stem = layer.name == "stem_conv" and config.resolved_stem == "cifar"
            if resnet and isinstance(layer, layers.Conv2D) and not cifar_stem:
                kaiming_normal_fan_out(layer)
            else:
                torch_default(layer)
    return model


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer
