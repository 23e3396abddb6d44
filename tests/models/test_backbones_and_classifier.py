import keras
import numpy as np
import pytest
import tensorflow as tf

from models import ClassificationNetwork, resnet18, resnet34
from models.classifier import fit_linear_probe, topk_accuracy


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
def test_bad_backbone_arguments(kwargs):
    with pytest.raises(ValueError):
        resnet18(image_size=8, **kwargs)


def test_topk_accuracy_against_hand_computed_values():
    logits = np.array([[3, 2, 1], [1, 2, 3], [2, 3, 1]], float)
    labels = np.array([0, 0, 2])
    assert topk_accuracy(logits, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 2) == pytest.approx(1 / 3)
    assert topk_accuracy(logits, labels, 5) == 1.0


def test_linear_probe_learns_separable_features_and_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    encoder = resnet18(image_size=8, width=0.0625)
    labels = np.repeat(np.arange(3), 20)
    images = rng.normal(size=(60, 8, 8, 3)).astype("float32") * 0.1
    images[..., 0] += labels[:, None, None] * 1.0  # class shifts the red channel
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(16)
    net, history = fit_linear_probe(encoder, ds, ds, 3, epochs=30, learning_rate=1e-2,
                                    batch_size=16)
    assert history["top1"] == history["probe_test_top1"][-1]
    assert history["top1"] > 0.8
    assert history["top5"] == 1.0  # 3 classes: top-5 is certain
    logits = net.predict(images, verbose=0)
    assert topk_accuracy(logits, labels, 1) == pytest.approx(history["top1"])
    path = str(tmp_path / "classifier.keras")
    net.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), logits, atol=1e-5)
    assert not loaded.encoder.trainable


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


def test_classifier_rejects_a_single_class():
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationNetwork(resnet18(image_size=8, width=0.0625), 1)
