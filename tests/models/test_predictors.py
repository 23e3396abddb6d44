import numpy as np
import pytest
import tensorflow as tf

from models import (accumulate_correlation, direct_copy_weights, direct_pred_weights,
                    symmetrize, symmetrize_two_layer)
from models.predictors import centered_correlation


def random_orthogonal(d, seed):
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
    return q


def test_direct_pred_weights_from_known_eigendecomposition():
    d = 6
    q = random_orthogonal(d, 0)
    s = np.array([4.0, 1.0, 0.25, 0.0, -0.5, 1e-3])  # includes zero and negative
    corr = (q * s) @ q.T
    eps = 0.1
    p = np.maximum(np.sqrt(np.maximum(s, 0) / s.max()) + eps, 1e-4)
    expected = (q * p) @ q.T
    got = direct_pred_weights(corr.astype("float32"), eps=eps).numpy()
    np.testing.assert_allclose(got, expected, atol=2e-5)
    # Eigenvalues of Wp: 1 + eps for the top direction, eps for the zero/negative ones.
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(got)), np.sort(p), atol=2e-5)


def test_direct_pred_power_from_known_eigendecomposition():
    # p_j = (s_j / s_max) ** power + eps: the official code's dyn_convert = 1 / power.
    d = 5
    q = random_orthogonal(d, 5)
    s = np.array([2.0, 0.5, 0.08, 0.0, -0.1])
    corr = (q * s) @ q.T
    for power, eps in ((1.0, 0.1), (0.75, 0.01), (0.5, 0.0)):
        p = (np.maximum(s, 0) / s.max()) ** power + eps
        expected = (q * np.maximum(p, 1e-4)) @ q.T
        got = direct_pred_weights(corr.astype("float32"), eps=eps, power=power).numpy()
        np.testing.assert_allclose(got, expected, atol=2e-5)
    # On a PSD F, power 1 is F / s_max + eps I: DirectCopy (DirectSet(1)), not the
    # TF2 reproduction's F / ||F||_F + eps I.
    psd = ((q * np.maximum(s, 0)) @ q.T).astype("float32")
    linear = direct_pred_weights(psd, eps=0.1, power=1.0).numpy()
    np.testing.assert_allclose(linear, psd / 2.0 + 0.1 * np.eye(d), atol=2e-5)
    np.testing.assert_allclose(direct_copy_weights(psd, eps=0.1).numpy(), linear, atol=2e-5)
    frobenius = direct_copy_weights(psd, eps=0.1, norm="frobenius").numpy()
    assert not np.allclose(linear, frobenius, atol=1e-3)


def test_direct_pred_negative_eps_is_clipped_at_1e_4():
    q = random_orthogonal(3, 1)
    corr = (q * np.array([1.0, 0.0, 0.0])) @ q.T
    got = direct_pred_weights(corr.astype("float32"), eps=-0.5).numpy()
    np.testing.assert_allclose(np.sort(np.linalg.eigvalsh(got)), [1e-4, 1e-4, 0.5],
                               atol=1e-5)


@pytest.mark.parametrize("norm", ["spectral", "frobenius"])
def test_direct_copy_weights(norm):
    rng = np.random.default_rng(2)
    a = rng.normal(size=(5, 5))
    corr = a @ a.T
    scale = np.linalg.eigvalsh(corr).max() if norm == "spectral" else np.linalg.norm(corr)
    expected = corr / scale + 0.3 * np.eye(5)
    got = direct_copy_weights(corr.astype("float32"), eps=0.3, norm=norm).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert np.isclose(np.linalg.eigvalsh(got).max(), 1.3, atol=1e-5) == (norm == "spectral")


def test_direct_copy_refuses_an_unknown_norm():
    with pytest.raises(ValueError, match="Received: norm='l1'"):
        direct_copy_weights(np.eye(3, dtype="float32"), norm="l1")


def test_correlation_accumulator_over_several_steps():
    rng = np.random.default_rng(3)
    d, rho = 4, 0.3
    corr = tf.zeros((d, d))
    mean = tf.zeros((d,))
    ref_corr = ref_mean = None
    for step in range(4):
        z = rng.normal(loc=0.5, size=(10, d)).astype("float32")
        batch = z.T @ z / len(z)
        ref_corr = batch if ref_corr is None else rho * ref_corr + (1 - rho) * batch
        ref_mean = z.mean(0) if ref_mean is None else rho * ref_mean + (1 - rho) * z.mean(0)
        corr, mean = accumulate_correlation(corr, z, rho, step > 0, center=True, mean=mean)
        np.testing.assert_allclose(corr.numpy(), ref_corr, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(centered_correlation(corr, mean).numpy(),
                               ref_corr - np.outer(ref_mean, ref_mean), rtol=1e-5, atol=1e-6)


def test_symmetrize_linear_and_two_layer():
    rng = np.random.default_rng(4)
    w = rng.normal(size=(4, 4)).astype("float32")
    s = symmetrize(w).numpy()
    np.testing.assert_allclose(s, s.T)
    np.testing.assert_allclose(s, (w + w.T) / 2, rtol=1e-6)
    k1 = rng.normal(size=(4, 6)).astype("float32")
    k2 = rng.normal(size=(6, 4)).astype("float32")
    n1, n2 = symmetrize_two_layer(k1, k2)
    np.testing.assert_allclose(n1.numpy(), (k1 + k2.T) / 2, rtol=1e-6)
    np.testing.assert_allclose(n2.numpy(), n1.numpy().T)


def test_every_computed_predictor_the_config_declares_has_one_rule():
    from config.methods import COMPUTED_PREDICTORS
    from models.predictors import PREDICTOR_RULES
    assert sorted(PREDICTOR_RULES) == sorted(COMPUTED_PREDICTORS)
