import numpy as np
import pytest
import tensorflow as tf

from models import negative_cosine, symmetric_loss


def np_loss(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.mean(2 - 2 * np.sum(p * z, axis=1))


def test_symmetric_loss_matches_numpy():
    rng = np.random.default_rng(1)
    p1, z2, p2, z1 = (rng.normal(size=(5, 7)).astype("float32") for _ in range(4))
    expected = np_loss(p1, z2) + np_loss(p2, z1)
    assert float(symmetric_loss(p1, z2, p2, z1)) == pytest.approx(expected, rel=1e-5)


def test_known_values_use_the_unhalved_2_minus_2cos_scaling():
    e1 = np.array([[1.0, 0.0]], "float32")
    e2 = np.array([[0.0, 3.0]], "float32")
    assert float(symmetric_loss(e1, 2 * e1, e1, e1)) == pytest.approx(0.0, abs=1e-6)
    assert float(symmetric_loss(e1, -e1, e1, -e1)) == pytest.approx(8.0, abs=1e-6)
    assert float(symmetric_loss(e1, e2, e1, e2)) == pytest.approx(4.0, abs=1e-6)


def test_gradient_matches_analytic_and_target_gets_none():
    rng = np.random.default_rng(2)
    p = tf.Variable(rng.normal(size=(3, 4)).astype("float32"))
    z = tf.Variable(rng.normal(size=(3, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(negative_cosine(p, z))
    gp, gz = tape.gradient(loss, [p, z])
    pn, zn = p.numpy(), z.numpy()
    norm = np.linalg.norm(pn, axis=1, keepdims=True)
    ph = pn / norm
    zh = zn / np.linalg.norm(zn, axis=1, keepdims=True)
    cos = np.sum(ph * zh, axis=1, keepdims=True)
    expected = -2.0 / norm * (zh - cos * ph) / 3
    np.testing.assert_allclose(gp.numpy(), expected, rtol=1e-4, atol=1e-6)
    assert gz is None  # stop-gradient on the target
    # A small step against the gradient increases the cosine similarity.
    new_cos = np.sum((pn - 0.1 * gp.numpy()) / np.linalg.norm(
        pn - 0.1 * gp.numpy(), axis=1, keepdims=True) * zh, axis=1)
    assert np.all(new_cos > cos[:, 0])


@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_loss_is_float32_for_low_precision_inputs(dtype):
    rng = np.random.default_rng(3)
    arrays = [rng.normal(size=(6, 8)).astype("float32") for _ in range(4)]
    low = [tf.cast(a, dtype) for a in arrays]
    loss = symmetric_loss(*low)
    assert loss.dtype == tf.float32
    rounded = [tf.cast(a, tf.float32).numpy() for a in low]
    expected = np_loss(rounded[0], rounded[1]) + np_loss(rounded[2], rounded[3])
    assert float(loss) == pytest.approx(expected, rel=1e-5)
