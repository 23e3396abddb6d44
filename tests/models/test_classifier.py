"""models/classifier.py: the linear probe, its classifier, and its batches on both backends."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import ClassificationNetwork, resnet18
from models.classifier import fit_linear_probe, shuffled_batches, topk_accuracy
from tests.models.jax_subprocess import jax_available, run_jax_worker


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


def test_classifier_rejects_a_single_class():
    with pytest.raises(ValueError, match="num_classes"):
        ClassificationNetwork(resnet18(image_size=8, width=0.0625), 1)


#: One probe run on given features from given initial weights (the initialisers draw
#: differently on the two backends): run here under TensorFlow and in a JAX worker.
PROBE = r'''
def probe(inputs, protocol):
    import keras
    import numpy as np
    from models import classifier

    class FromGivenWeights(classifier.ClassificationNetwork):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.linear.kernel.assign(inputs["kernel"])
            self.linear.bias.assign(inputs["bias"])

    features = keras.Input((inputs["x"].shape[1],))
    encoder = keras.Model(features, keras.layers.Identity()(features))
    original, classifier.ClassificationNetwork = classifier.ClassificationNetwork, FromGivenWeights
    try:
        _, history = classifier.fit_linear_probe(
            encoder, (inputs["x"], inputs["y"]), (inputs["x"], inputs["y"]), 3, epochs=3,
            learning_rate=0.05, batch_size=8, seed=5, protocol=protocol)
    finally:
        classifier.ClassificationNetwork = original
    return {f"{protocol}/{k}": np.asarray(v) for k, v in history.items()
            if k.startswith("probe_")}
'''


def _probe_inputs():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    x = (rng.normal(size=(30, 6)) + y[:, None]).astype("float32")
    return {"x": x, "y": y, "kernel": rng.normal(size=(6, 3)).astype("float32") * 0.1,
            "bias": np.zeros(3, "float32")}


def test_shuffled_batches_are_a_seeded_permutation_with_a_partial_last_batch():
    x, y = np.arange(10, dtype="float32")[:, None], np.arange(10)
    batches = list(shuffled_batches(x, y, 4, seed=3))
    assert [len(b[1]) for b in batches] == [4, 4, 2]
    order = np.concatenate([b[1] for b in batches])
    assert sorted(order) == list(range(10))
    np.testing.assert_array_equal(order, np.random.default_rng(3).permutation(10))
    np.testing.assert_array_equal(np.concatenate([b[0][:, 0] for b in batches]), order)


@pytest.mark.skipif(not jax_available(), reason="needs the jax extra")
def test_tensorflow_and_jax_probes_on_the_same_features_agree(tmp_path):
    """The same seed gives the same mini-batches on both backends (one NumPy
    permutation), so from the same weights the two probes take the same steps."""
    inputs = _probe_inputs()
    namespace = {}
    exec(PROBE, namespace)  # noqa: S102 (the same source runs in the JAX worker)
    tf_side = {**namespace["probe"](inputs, "official"),
               **namespace["probe"](inputs, "full_batch")}
    jax_side = run_jax_worker(PROBE + '\nsave(**probe(INPUTS, "official"), '
                              '**probe(INPUTS, "full_batch"))\n', tmp_path, inputs)
    assert sorted(tf_side) == sorted(jax_side)
    for key, value in tf_side.items():
        np.testing.assert_allclose(jax_side[key], value, rtol=1e-4, atol=1e-6, err_msg=key)
    assert len(set(np.round(tf_side["official/probe_loss"], 6))) == 3  # it did learn
