"""Network constants of the official (PyTorch) networks: initialisers and BatchNorm.

Official: torchvision ``resnet18`` (convolutions ``kaiming_normal_(mode="fan_out")``), the
CIFAR stem conv and every ``nn.Linear`` at PyTorch's default ``U(+-1/sqrt(fan_in))`` (bias
too), ``nn.BatchNorm`` eps 1e-5 / momentum 0.1, heads' BN without affine
(``byol_config.yaml``: ``has_bn_affine: false``). :mod:`models.network_constants`.
"""

import math

import keras
import numpy as np
import pytest

from config import get_config
from models import SiameseNetwork, backbones
from tests.models.conftest import tiny_config


def _layers(model, kind):
    out = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            out += _layers(layer, kind)
        elif isinstance(layer, kind):
            out.append(layer)
    return out


def _fan_in(kernel):
    return math.prod(kernel.shape[:-1])


def test_resnet_gets_torchvision_init_and_torch_bn_constants():
    keras.utils.set_random_seed(0)
    config = get_config("byol", width=0.25)
    encoder = backbones.build_encoder(config)
    convs = _layers(encoder, keras.layers.Conv2D)
    stem = [c for c in convs if c.name == "stem_conv"][0]
    bound = 1.0 / math.sqrt(_fan_in(stem.kernel))  # nn.Conv2d default: the replaced stem
    k = stem.kernel.numpy()
    assert np.abs(k).max() <= bound and np.abs(k).max() > 0.9 * bound
    big = max((c for c in convs if c is not stem), key=lambda c: np.prod(c.kernel.shape))
    fan_out = math.prod(big.kernel.shape[:-2]) * big.kernel.shape[-1]
    std = big.kernel.numpy().std()
    assert abs(std / math.sqrt(2.0 / fan_out) - 1) < 0.05  # Kaiming normal, fan-out
    bns = _layers(encoder, keras.layers.BatchNormalization)
    assert bns and all((bn.epsilon, bn.momentum) == (1e-5, 0.9) for bn in bns)


def test_heads_get_torch_linear_init_and_bn_without_affine():
    keras.utils.set_random_seed(0)
    model = SiameseNetwork(tiny_config("byol"))
    for head in (model.online_projector, model.predictor):
        dense = _layers(head, keras.layers.Dense)
        for layer in dense:
            bound = 1.0 / math.sqrt(_fan_in(layer.kernel))
            for w in (layer.kernel.numpy(), layer.bias.numpy()):
                assert np.abs(w).max() <= bound and np.abs(w).max() > 0.5 * bound
        for bn in _layers(head, keras.layers.BatchNormalization):
            assert not bn.center and not bn.scale  # no affine, as the official heads
            assert (bn.epsilon, bn.momentum) == (1e-5, 0.9)
    # The target's BN statistics are the EMA of the online ones (momentum 1 in its layers).
    assert all(bn.momentum == 1.0 for bn in _layers(model.target_encoder,
                                                   keras.layers.BatchNormalization))


def test_keras_constants_remain_an_option():
    keras.utils.set_random_seed(0)
    config = tiny_config("byol", weight_init="keras", bn_epsilon=1e-3, bn_momentum=0.99,
                         predictor_bn_affine=True)
    model = SiameseNetwork(config)
    bias = _layers(model.online_projector, keras.layers.Dense)[0].bias.numpy()
    assert np.all(bias == 0)  # Keras: zero biases
    bn = _layers(model.predictor, keras.layers.BatchNormalization)[0]
    assert bn.center and bn.scale and (bn.epsilon, bn.momentum) == (1e-3, 0.99)


@pytest.mark.parametrize("field, value", [("weight_init", "xavier"), ("bn_epsilon", 0.0),
                                          ("bn_momentum", 1.0)])
def test_bad_network_constants_are_refused_naming_them(field, value):
    with pytest.raises(ValueError, match=f"Received: {field}="):
        get_config("byol", **{field: value})
