"""Predictor maths of DirectPred and DirectCopy: pure functions in float32.

Convention: ``Wp`` acts on column vectors, ``p = Wp z``. A Keras ``Dense`` kernel
``K`` computes ``z @ K``, so ``K = Wp^T`` (the computed ``Wp`` are symmetric).
"""

import tensorflow as tf


def accumulate_correlation(corr, z, rho, initialized, center=False, mean=None):
    """One step of the correlation accumulator (paper Sec. 5, Eq. 17-18).

    ``F <- rho F + (1 - rho) E_b[z z^T]``; the very first call (``initialized``
    false) sets ``F = E_b[z z^T]``, as the official ``Accumulator`` does.
    ``z`` stacks the online projector outputs of both views, shape [2B, d].
    With ``center`` the running mean ``m`` (accumulated the same way) is
    returned too and callers use ``F - m m^T`` (official ``dyn_zero_mean``).

    Returns ``(new_corr, new_mean)`` (``new_mean`` is ``mean`` unchanged when
    ``center`` is false).
    """
    z = tf.cast(tf.stop_gradient(z), tf.float32)
    n = tf.cast(tf.shape(z)[0], tf.float32)
    batch_corr = tf.matmul(z, z, transpose_a=True) / n
    rho = tf.cast(rho, tf.float32)
    initialized = tf.cast(initialized, tf.bool)
    new_corr = tf.where(initialized, rho * corr + (1.0 - rho) * batch_corr, batch_corr)
    new_mean = mean
    if center:
        batch_mean = tf.reduce_mean(z, axis=0)
        new_mean = tf.where(initialized, rho * mean + (1.0 - rho) * batch_mean, batch_mean)
    return new_corr, new_mean


def centered_correlation(corr, mean):
    """``F - m m^T``: the covariance form of the accumulated correlation."""
    return corr - tf.tensordot(mean, mean, axes=0)


def direct_pred_weights(corr, eps=0.1, power=0.5):
    """DirectPred predictor from the correlation F (paper Sec. 5, Eq. 18).

    With ``F = U diag(s) U^T`` (``tf.linalg.eigh``, float32, in-graph):
    ``p_j = (max(s_j, 0) / s_max) ** power + eps``, clipped below at 1e-4
    (official ``compute_w_corr``, ``balance_type=boost_scale``), and
    ``Wp = U diag(p) U^T``. ``power`` 0.5 is Eq. 18's square root; the official
    code's ``dyn_convert`` is ``1 / power`` (1: p_j linear in s_j, a DirectCopy-like
    rule normalised by the top eigenvalue instead of ``||F||_F``).
    """
    corr = tf.cast(corr, tf.float32)
    corr = 0.5 * (corr + tf.transpose(corr))
    s, u = tf.linalg.eigh(corr)
    s_max = tf.maximum(tf.reduce_max(s), 1e-30)
    ratio = tf.maximum(s, 0.0) / s_max
    p = (tf.sqrt(ratio) if power == 0.5 else tf.pow(ratio, power)) + eps
    p = tf.maximum(p, 1e-4)
    return tf.matmul(u * p[tf.newaxis, :], u, transpose_b=True)


def direct_copy_weights(corr, eps=0.3):
    """DirectCopy predictor (Wang et al. 2021, "Towards demystifying ... DirectCopy"):
    ``Wp = F / ||F||_F + eps I``.

    The Frobenius normalisation (as in the original TF2 reproduction's
    ``get_direct_copy``) makes ``eps`` comparable across runs and feature scales.
    """
    corr = tf.cast(corr, tf.float32)
    norm = tf.maximum(tf.norm(corr), 1e-30)
    return corr / norm + eps * tf.eye(tf.shape(corr)[0], dtype=tf.float32)


def symmetrize(w):
    """``(W + W^T) / 2``: symmetry regularisation of a square linear predictor."""
    return 0.5 * (w + tf.transpose(w))


def symmetrize_two_layer(k1, k2):
    """Symmetry regularisation of a 2-layer predictor (original TF2 reproduction):
    ``W1 <- (W1 + W2^T) / 2``, ``W2 <- W1^T``. Works on Keras kernels
    ``k1`` [d, h], ``k2`` [h, d] (the rule is the same for transposes).
    Returns ``(new_k1, new_k2)``.
    """
    new_k1 = 0.5 * (k1 + tf.transpose(k2))
    return new_k1, tf.transpose(new_k1)
