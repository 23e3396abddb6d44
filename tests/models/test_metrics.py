"""models/metrics.py: the collapse monitor ``normalized_std`` against NumPy references."""

import numpy as np
import pytest

from models.metrics import normalized_std

tf = pytest.importorskip("tensorflow")


def _reference(z):
    """Mean over dims of the population std of ``z / max(|z|, 1e-6)``, in float64."""
    z = np.asarray(z, dtype=np.float64)
    norms = np.sqrt(np.maximum(np.sum(z * z, axis=1, keepdims=True), 1e-12))
    return float(np.mean(np.std(z / norms, axis=0)))


def test_normalized_std_collapsed_is_zero():
    z = np.tile(np.array([[0.3, -1.2, 2.0, 0.5]], np.float32), (16, 1))
    assert float(normalized_std(z)) == pytest.approx(0.0, abs=1e-6)
    # Same direction, different norms: still collapsed after normalisation.
    scaled = z * np.arange(1, 17, dtype=np.float32)[:, None]
    assert float(normalized_std(scaled)) == pytest.approx(0.0, abs=1e-6)


def test_normalized_std_isotropic_gaussian():
    d = 16
    z = np.random.default_rng(0).standard_normal((4000, d)).astype(np.float32)
    assert float(normalized_std(z)) == pytest.approx(1 / np.sqrt(d), rel=0.02)


def test_normalized_std_against_manual_formula():
    z = np.random.default_rng(1).standard_normal((7, 5)) + 1.0
    u = z / np.sqrt((z ** 2).sum(axis=1))[:, None]
    mean = u.mean(axis=0)
    expected = np.mean(np.sqrt(((u - mean) ** 2).mean(axis=0)))
    assert _reference(z) == pytest.approx(expected, rel=1e-12)
    assert float(normalized_std(z.astype(np.float32))) == pytest.approx(expected, rel=1e-5)


def test_normalized_std_tf_matches_numpy_and_traces():
    z = np.random.default_rng(2).standard_normal((32, 8)).astype(np.float32)
    expected = _reference(z)
    eager = normalized_std(z)
    assert eager.dtype == tf.float32
    assert float(eager) == pytest.approx(expected, rel=1e-5)
    traced = tf.function(normalized_std)(tf.constant(z))
    assert float(traced) == pytest.approx(expected, rel=1e-5)
    assert float(normalized_std(np.tile(z[:1], (4, 1)))) == pytest.approx(0.0, abs=1e-6)
