"""Every backbone of config.BACKBONES: shapes, sizes, a SiameseNetwork step, saving, sync BN.

Batch 2 and reduced widths keep the heavy ImageNet networks cheap on a CPU.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import config as config_lib
import train
from models import SiameseNetwork, build_optimizer, resnet18, resnet34
from models import backbones
from tests.models.conftest import tiny_config

#: Parameters of each encoder at 32 px, CIFAR stem, width 1 (no classifier).
PARAMS_AT_32 = {
    "resnet18": 11_178_432,
    "resnet34": 21_294_016,
    "resnet50": 23_553_472,
    "vgg16": 14_727_360,       # Keras VGG16 (14.71M) with BN in place of conv biases
    "densenet121": 7_029_824,  # Keras DenseNet121 (7.04M) with the 3x3 CIFAR stem conv
    "efficientnet_b0": 4_049_564,  # Keras EfficientNetB0 without its Normalization layer
    "alexnet": 2_827_680,
}
FEATURES = {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "vgg16": 512,
            "densenet121": 1024, "efficientnet_b0": 1280, "alexnet": 192}
#: Train-step width per backbone: small, but every network keeps > 1 channel per layer.
TRAIN_WIDTH = {"resnet18": 0.0625, "resnet34": 0.0625, "resnet50": 0.0625, "vgg16": 0.0625,
               "densenet121": 0.125, "efficientnet_b0": 0.125, "alexnet": 0.125}


def images(size, batch=2, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, size, size, 3)).astype("float32")


def bn_layers(model):
    return [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]


def test_backbone_lists_agree():
    assert config_lib.BACKBONES == backbones.BACKBONES
    assert set(PARAMS_AT_32) == set(backbones.IMAGE_BACKBONES)


@pytest.mark.parametrize("backbone", backbones.IMAGE_BACKBONES)
def test_builds_at_32_and_96_px_with_declared_feature_size(backbone):
    config = config_lib.Config(backbone=backbone, image_size=32)
    encoder = backbones.build_encoder(config, name="online_encoder")
    assert encoder.name == "online_encoder"
    assert backbones.feature_dim(config) == FEATURES[backbone]
    assert encoder.output.shape[-1] == FEATURES[backbone]
    assert encoder.count_params() == PARAMS_AT_32[backbone]
    features = encoder(images(32), training=True)
    assert features.shape == (2, FEATURES[backbone])
    assert np.isfinite(features.numpy()).all()
    # 96 px: "auto" resolves to the ImageNet stem; an odd width checks the rounding.
    config96 = config.replace(image_size=96, width=0.3)
    assert config96.resolved_stem == "imagenet"
    encoder96 = backbones.build_encoder(config96)
    dim = backbones.feature_dim(config96)
    assert encoder96.output.shape[-1] == dim
    assert encoder96(images(96)).shape == (2, dim)


@pytest.mark.parametrize("backbone,stem,max_pools", [
    ("resnet50", "cifar", 0), ("resnet50", "imagenet", 1),
    ("densenet121", "cifar", 0), ("densenet121", "imagenet", 1),
])
def test_cifar_stem_has_no_max_pool(backbone, stem, max_pools):
    encoder = backbones.build(backbone, image_size=32, width=0.0625, stem=stem)
    pools = [l for l in encoder.layers if isinstance(l, keras.layers.MaxPooling2D)]
    assert len(pools) == max_pools
    first_conv = next(l for l in encoder.layers if isinstance(l, keras.layers.Conv2D))
    assert first_conv.strides == ((1, 1) if stem == "cifar" else (2, 2))


def test_efficientnet_has_no_input_rescaling_and_cifar_stem_stride_1():
    encoder = backbones.build("efficientnet_b0", image_size=32, width=0.125, stem="cifar")
    assert not any(isinstance(l, (keras.layers.Rescaling, keras.layers.Normalization))
                   for l in encoder.layers)
    assert encoder.get_layer("stem_conv").strides == (1, 1)


@pytest.mark.parametrize("backbone", ["resnet18", "efficientnet_b0"])
def test_mixed_bfloat16_policy_reaches_every_layer(backbone):
    encoder = backbones.build(backbone, image_size=32, width=0.125, dtype="mixed_bfloat16")
    assert {l.dtype_policy.name for l in encoder.layers[1:]} == {"mixed_bfloat16"}
    assert all(v.dtype == "float32" for v in encoder.weights)
    assert encoder(images(32)).dtype == tf.bfloat16


def test_bad_backbone_name_lists_valid_choices():
    with pytest.raises(ValueError, match="densenet121.*alexnet"):
        config_lib.Config(backbone="resnet101")
    with pytest.raises(ValueError, match=r"Valid choices: \[.*'efficientnet_b0'"):
        backbones.build("resnet101")
    with pytest.raises(ValueError, match="Valid choices"):
        backbones.feature_dim("vit")


@pytest.mark.parametrize("kwargs,match", [
    (dict(backbone="vgg16", image_size=16), "image_size >= 32"),
    (dict(backbone="alexnet", image_size=8), "image_size >= 15"),
    (dict(backbone="densenet121", width=0), "Received: width=0"),
    (dict(backbone="efficientnet_b0", stem="vit"), "Unknown stem"),
])
def test_bad_backbone_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        backbones.build(**kwargs)


def test_backbone_flag_sets_config():
    assert train.make_config({"backbone": "densenet121"}).backbone == "densenet121"
    assert "backbone" in train.OVERRIDES


@pytest.mark.parametrize("backbone", ["resnet18", "vgg16", "densenet121"])
def test_synchronized_bn_on_every_bn_layer(backbone):
    config = tiny_config("byol", backbone=backbone, image_size=32, width=0.0625)
    sync = backbones.build_encoder(config, synchronized=True)
    assert bn_layers(sync) and all(l.synchronized for l in bn_layers(sync))
    assert not any(l.synchronized for l in bn_layers(backbones.build_encoder(config)))
    assert sync(images(32), training=True).shape == (2, backbones.feature_dim(config))


def test_synchronized_bn_follows_the_number_of_replicas(monkeypatch):
    class TwoReplicas:
        num_replicas_in_sync = 2

    config = tiny_config("byol", backbone="alexnet", image_size=32)
    monkeypatch.setattr(tf.distribute, "get_strategy", lambda: TwoReplicas())
    assert all(l.synchronized for l in bn_layers(backbones.build_encoder(config)))
    assert not any(l.synchronized for l in
                   bn_layers(backbones.build_encoder(config, synchronized=False)))


_TRAINED = {}


def trained(backbone):
    """A BYOL SiameseNetwork (online + target encoder) after one eager train step,
    built once per backbone; returns (model, loss, weights before the step)."""
    if backbone not in _TRAINED:
        config = tiny_config("byol", backbone=backbone, image_size=32, batch_size=2,
                             width=TRAIN_WIDTH[backbone])
        model = SiameseNetwork(config)
        model.compile(optimizer=build_optimizer(config), run_eagerly=True)
        before = [v.numpy().copy() for v in model.online_encoder.trainable_weights]
        logs = model.train_on_batch((images(32, seed=1), images(32, seed=2)),
                                    return_dict=True)
        _TRAINED[backbone] = model, logs["loss"], before
    return _TRAINED[backbone]


@pytest.mark.parametrize("backbone", backbones.IMAGE_BACKBONES)
def test_one_train_step_in_a_siamese_network(backbone):
    model, loss, before = trained(backbone)
    assert np.isfinite(loss)
    assert model.feature_dim == backbones.feature_dim(model.config)
    after = model.online_encoder.trainable_weights
    assert any(not np.allclose(b, a.numpy()) for b, a in zip(before, after))
    # online and target encoders are two networks with the same layer names
    assert ([l.name for l in model.online_encoder.layers]
            == [l.name for l in model.target_encoder.layers])
    # the target's BN statistics move only by EMA (SSLModel sets momentum 1 on every
    # top-level BN layer: the encoders must be flat, without nested models)
    assert not any(isinstance(l, keras.Model) for l in model.target_encoder.layers)
    assert all(l.momentum == 1.0 for l in bn_layers(model.target_encoder))


@pytest.mark.parametrize("backbone", ["resnet50", "vgg16", "densenet121",
                                      "efficientnet_b0", "alexnet"])
def test_save_and_load_round_trip(backbone, tmp_path):
    model, _, _ = trained(backbone)
    expected = [v.numpy() for v in model.weights]
    assert len({v.path for v in model.online_encoder.weights}) == len(
        model.online_encoder.weights)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.config == model.config
    assert len(loaded.weights) == len(expected)
    for v, value in zip(loaded.weights, expected):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    # .weights.h5 into a freshly built network (target differs from online by now)
    weights_path = str(tmp_path / "model.weights.h5")
    model.save_weights(weights_path)
    fresh = SiameseNetwork(model.config)
    fresh.load_weights(weights_path)
    for v, value in zip(fresh.weights, expected):
        np.testing.assert_array_equal(v.numpy(), value, err_msg=v.path)
    x = images(32, seed=3)
    np.testing.assert_allclose(fresh(x).numpy(), model(x).numpy(), atol=1e-5)


def test_keras_application_encoder_round_trips_on_its_own(tmp_path):
    encoder = backbones.build("efficientnet_b0", image_size=32, width=0.125,
                              synchronized=True)
    x = images(32, seed=4)
    encoder.save(str(tmp_path / "encoder.keras"))
    loaded = keras.models.load_model(str(tmp_path / "encoder.keras"))
    assert all(l.synchronized for l in bn_layers(loaded))
    np.testing.assert_allclose(loaded(x).numpy(), encoder(x).numpy(), atol=1e-5)


def test_cifar_resnet18_shapes_and_published_size():
    encoder = resnet18(image_size=32)
    assert encoder.output.shape[-1] == 512
    # 11.17M parameters for the CIFAR ResNet-18 encoder (3x3 stem, no fc).
    assert 11.1e6 < encoder.count_params() < 11.25e6
    assert not any(isinstance(l, keras.layers.MaxPooling2D) for l in encoder.layers)


def test_imagenet_stem_and_width_multiplier():
    encoder = resnet18(image_size=96, stem="imagenet", width=0.25)
    assert encoder.output.shape[-1] == 128
    assert any(isinstance(l, keras.layers.MaxPooling2D) for l in encoder.layers)
    assert encoder(np.zeros((2, 96, 96, 3), "float32")).shape == (2, 128)
    assert resnet34(image_size=8, width=0.0625).output.shape[-1] == 32


@pytest.mark.parametrize("kwargs", [dict(stem="vgg"), dict(width=0)])
def test_bad_resnet_arguments(kwargs):
    with pytest.raises(ValueError):
        resnet18(image_size=8, **kwargs)


def test_encoder_weights_round_trip(tmp_path):
    encoder = resnet18(image_size=8, width=0.0625)
    x = np.random.default_rng(1).normal(size=(2, 8, 8, 3)).astype("float32")
    path = str(tmp_path / "encoder.weights.h5")
    encoder.save_weights(path)
    other = resnet18(image_size=8, width=0.0625)
    other.load_weights(path)
    np.testing.assert_allclose(other(x).numpy(), encoder(x).numpy(), atol=1e-6)
    encoder.save(str(tmp_path / "encoder.keras"))
    loaded = keras.models.load_model(str(tmp_path / "encoder.keras"))
    np.testing.assert_allclose(loaded(x).numpy(), encoder(x).numpy(), atol=1e-6)
