"""Tests for experiments.metrics against independent NumPy references."""

import numpy as np
import pytest

from experiments.metrics import knn_accuracy, knn_predict

tf = pytest.importorskip("tensorflow")


def _reference_knn(train, labels, test, num_classes, k, temperature):
    """Straightforward per-example weighted kNN in float64."""
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    k = min(k, len(train))
    out = []
    for x in test:
        sim = train @ (x / np.linalg.norm(x))
        nearest = np.argsort(-sim, kind="stable")[:k]
        scores = np.zeros(num_classes)
        for j in nearest:
            scores[labels[j]] += np.exp(sim[j] / temperature)
        out.append(int(np.argmax(scores)))
    return np.array(out)


# ---------------------------------------------------------------------------
# kNN
# ---------------------------------------------------------------------------

def test_knn_hand_made_case():
    # Two classes on the unit circle; with k=3 the test point at 10 degrees has
    # neighbours at 0 (class 0), 20 (class 0) and 90 degrees (class 1).
    angles = np.deg2rad([0.0, 20.0, 90.0, 100.0, 180.0])
    train = np.stack([np.cos(angles), np.sin(angles)], axis=1) * [[1], [3], [2], [1], [5]]
    labels = np.array([0, 0, 1, 1, 1])
    test = np.array([[np.cos(np.deg2rad(10.0)), np.sin(np.deg2rad(10.0))],
                     [0.0, -4.0],       # 270 degrees: nearest 180 (1), 0 (0), 20 (0)
                     [-1.0, 1.0]])      # 135 degrees: nearest 100, 90, 180 -> class 1
    predicted = knn_predict(train, labels, test, num_classes=2, k=3, temperature=0.1)
    assert predicted.dtype == np.int64
    # Second point: exp(cos(90)/.1)=1 for class 1 (180) and 1 + exp(cos(110)/.1)
    # for class 0 (0, 20 degrees) -> class 0 wins only by the 20 degree vote.
    np.testing.assert_array_equal(predicted, [0, 0, 1])
    # k=1: plain nearest neighbour (135 degrees -> 100 degrees, class 1).
    assert knn_predict(train, labels, test[2:], 2, k=1).tolist() == [1]
    # k=5: everyone votes; at high temperature the majority (class 1) wins.
    assert knn_predict(train, labels, test[:1], 2, k=5, temperature=1e3).tolist() == [1]
    assert knn_accuracy(train, labels, test, [0, 1, 1], num_classes=2, k=3) == pytest.approx(2 / 3)


def test_knn_temperature_changes_vote():
    # Class 0: one very close neighbour; class 1: two moderately close ones.
    train = np.array([[1.0, 0.0], [0.8, 0.6], [0.8, -0.6]])
    labels = np.array([0, 1, 1])
    test = np.array([[1.0, 0.0]])
    # Low temperature: exp(1/T) dominates 2 exp(0.8/T) -> class 0.
    assert knn_predict(train, labels, test, 2, k=3, temperature=0.1).tolist() == [0]
    # High temperature: weights ~1 each -> majority class 1.
    assert knn_predict(train, labels, test, 2, k=3, temperature=100.0).tolist() == [1]
    # Tiny temperature: exp(sim / T) overflows float32 for both classes (a tie
    # that argmax would resolve to class 0); the nearest neighbour (class 1) must win.
    assert knn_predict(train[:2], [1, 0], test, 2, k=2, temperature=1e-3).tolist() == [1]


@pytest.mark.parametrize("k, batch_size", [(5, 7), (200, 1024), (1, 3)])
def test_knn_matches_numpy_reference(k, batch_size):
    rng = np.random.default_rng(3)
    num_classes = 4
    centers = rng.standard_normal((num_classes, 12)) * 1.5
    labels = rng.integers(0, num_classes, 60)
    train = centers[labels] + rng.standard_normal((60, 12))
    test_labels = rng.integers(0, num_classes, 25)
    test = centers[test_labels] + rng.standard_normal((25, 12))
    reference = _reference_knn(train, labels, test, num_classes, k, 0.1)
    predicted = knn_predict(train.astype(np.float32), labels, test.astype(np.float32),
                            num_classes, k=k, temperature=0.1, batch_size=batch_size)
    np.testing.assert_array_equal(predicted, reference)   # k=200 > 60: clipped
    accuracy = knn_accuracy(train, labels, test, test_labels, num_classes, k=k,
                            batch_size=batch_size)
    assert accuracy == pytest.approx(np.mean(reference == test_labels))


def test_knn_low_precision_inputs_computed_in_float32():
    rng = np.random.default_rng(4)
    train = rng.standard_normal((40, 8)).astype(np.float32)
    labels = rng.integers(0, 3, 40)
    test = rng.standard_normal((10, 8)).astype(np.float32)
    # Reference on the bfloat16-rounded values, computed in float64.
    train_bf = tf.cast(tf.cast(train, tf.bfloat16), tf.float64).numpy()
    test_bf = tf.cast(tf.cast(test, tf.bfloat16), tf.float64).numpy()
    reference = _reference_knn(train_bf, labels, test_bf, 3, 7, 0.1)
    predicted = knn_predict(tf.cast(train, tf.bfloat16), labels, tf.cast(test, tf.bfloat16),
                            3, k=7, batch_size=4)
    np.testing.assert_array_equal(predicted, reference)
    predicted16 = knn_predict(train.astype(np.float16), labels, test.astype(np.float16), 3, k=7)
    reference16 = _reference_knn(train.astype(np.float16).astype(np.float64), labels,
                                 test.astype(np.float16).astype(np.float64), 3, 7, 0.1)
    np.testing.assert_array_equal(predicted16, reference16)


def test_knn_bfloat16_needs_float32_arithmetic():
    # Both similarities round to 1.0 in bfloat16 (a tie -> index 0, class 1);
    # in float32 the second training point (class 0) is strictly closer.
    train = tf.constant([[1.0, 2.0 ** -5], [1.0, 2.0 ** -6]], tf.bfloat16)
    test = tf.constant([[1.0, 0.0]], tf.bfloat16)
    in_bf16 = tf.matmul(tf.math.l2_normalize(test, axis=1),
                        tf.math.l2_normalize(train, axis=1), transpose_b=True)
    assert in_bf16.numpy()[0, 0] == in_bf16.numpy()[0, 1]     # the trap is real
    assert knn_predict(train, [1, 0], test, 2, k=1).tolist() == [0]


def test_knn_bad_inputs():
    train = np.ones((4, 3), np.float32)
    with pytest.raises(ValueError, match="feature size"):
        knn_predict(train, [0, 1, 0, 1], np.ones((2, 5)), 2)
    with pytest.raises(ValueError, match="num_classes"):
        knn_predict(train, [0, 1, 0, 2], np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="one per training example"):
        knn_predict(train, [0, 1], np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="temperature"):
        knn_predict(train, [0, 1, 0, 1], np.ones((2, 3)), 2, temperature=0.0)
    with pytest.raises(ValueError, match="test_labels"):
        knn_accuracy(train, [0, 1, 0, 1], np.ones((2, 3)), [0], 2)
