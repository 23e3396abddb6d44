"""Predictor maths of DirectPred, DirectCopy, DirectSet(alpha) and the closed-form predictors of
Richemond et al. (2023): pure functions in float32 (``keras.ops``).

Convention: ``Wp`` acts on column vectors, ``p = Wp z``. A Keras ``Dense`` kernel
``K`` computes ``z @ K``, so ``K = Wp^T`` (the computed ``Wp`` are symmetric).

Under JAX on a GPU float32 matmuls may run as TF32; the JAX train step evaluates
these functions at the highest matmul precision (``backends/jax.py``).
"""

from keras import ops

from models.ops_util import f32


def accumulate_correlation(corr, z, rho, initialized, center=False, mean=None):
    """One step of the correlation accumulator (paper Sec. 4, Eq. 19).

    ``F <- rho F + (1 - rho) E_b[z z^T]``; the very first call (``initialized``
    false) sets ``F = E_b[z z^T]``, as the official ``Accumulator`` does.
    ``z`` stacks the online projector outputs of both views, shape [2B, d].
    With ``center`` the running mean ``m`` (accumulated the same way) is
    returned too and callers use ``F - m m^T`` (official ``dyn_zero_mean``).

    Returns ``(new_corr, new_mean)`` (``new_mean`` is ``mean`` unchanged when
    ``center`` is false).
    """
    z = f32(ops.stop_gradient(z))
    n = ops.cast(ops.shape(z)[0], "float32")
    batch_corr = ops.matmul(ops.transpose(z), z) / n
    rho = ops.cast(rho, "float32")
    initialized = ops.cast(initialized, "bool")
    new_corr = ops.where(initialized, rho * f32(corr) + (1.0 - rho) * batch_corr, batch_corr)
    new_mean = mean
    if center:
        batch_mean = ops.mean(z, axis=0)
        new_mean = ops.where(initialized, rho * f32(mean) + (1.0 - rho) * batch_mean,
                             batch_mean)
    return new_corr, new_mean


def centered_correlation(corr, mean):
    """``F - m m^T``: the covariance form of the accumulated correlation."""
    return corr - ops.outer(mean, mean)


def direct_pred_weights(corr, eps=0.1, power=0.5):
    """DirectPred predictor from the correlation F (paper Sec. 4, Eq. 18).

    With ``F = U diag(s) U^T`` (``keras.ops.eigh``, float32, in-graph):
    ``p_j = (max(s_j, 0) / s_max) ** power + eps``, clipped below at 1e-4
    (official ``compute_w_corr``, ``balance_type=boost_scale``), and
    ``Wp = U diag(p) U^T``. ``power`` 0.5 is Eq. 18's square root; the official
    code's ``dyn_convert`` is ``1 / power`` (1: p_j linear in s_j, a DirectCopy-like
    rule normalised by the top eigenvalue instead of ``||F||_F``).
    """
    corr = f32(corr)
    corr = 0.5 * (corr + ops.transpose(corr))
    s, u = ops.eigh(corr)
    s_max = ops.maximum(ops.max(s), 1e-30)
    ratio = ops.maximum(s, 0.0) / s_max
    p = (ops.sqrt(ratio) if power == 0.5 else ops.power(ratio, power)) + eps
    p = ops.maximum(p, 1e-4)
    return ops.matmul(u * p[None, :], ops.transpose(u))


def direct_copy_weights(corr, eps=0.3, norm="spectral"):
    """DirectCopy predictor (Wang, Chen, Du & Tian 2021, arXiv 2110.04947):
    ``Wp = F / ||F|| + eps I``: the rule needs no eigenvectors (the spectral norm is the
    top eigenvalue, computed here by ``eigh`` for its accuracy in float32).

    ``norm="spectral"``: ``||F||_2 = s_max`` (F is symmetric PSD), so DirectCopy is
    DirectSet(alpha = 1) beside DirectPred = DirectSet(1/2) with DirectPred's own
    normalisation (as ``dp_alpha=1`` in fmi-basel/implicit-var-reg,
    ``solo/methods/directpred.py``). ``norm="frobenius"``: ``||F||_F``, the original TF2
    reproduction's rule (config.json files before version 4).
    """
    corr = f32(corr)
    if norm == "spectral":
        scale = ops.max(ops.eigh(0.5 * (corr + ops.transpose(corr)))[0])
    elif norm == "frobenius":
        scale = ops.sqrt(ops.sum(ops.square(corr)))
    else:
        raise ValueError(f"DirectCopy norm must be 'spectral' or 'frobenius'. "
                         f"Received: norm={norm!r}")
    scale = ops.maximum(scale, 1e-30)
    return corr / scale + eps * ops.eye(ops.shape(corr)[0], dtype="float32")


def direct_set_weights(corr, alpha=0.5, eps=0.0, eps_at="before_power"):
    """DirectSet(alpha) (Wang, Chen, Du & Tian 2021, arXiv 2110.04947): ``Wp = U diag(p) U^T``
    with ``F = U diag(s) U^T`` and ``r_j = max(s_j, 0) / s_max``.

    ``eps_at="after_power"``: ``p_j = r_j^alpha + eps`` (this package's DirectPred rule, so
    DirectSet(1/2) = :func:`direct_pred_weights` and DirectSet(1) = :func:`direct_copy_weights`
    with the spectral norm, for every eps). ``"before_power"``: ``p_j = (r_j + eps)^alpha``,
    the rule of fmi-basel/implicit-var-reg (``solo/methods/directpred.py``, ``dp_alpha``,
    ``eps_iso``). Both are clipped below at 1e-4 as DirectPred's.
    """
    if eps_at not in ("after_power", "before_power"):
        raise ValueError("DirectSet eps_at must be 'after_power' or 'before_power'. "
                         f"Received: eps_at={eps_at!r}")
    corr = f32(corr)
    s, u = ops.eigh(0.5 * (corr + ops.transpose(corr)))
    ratio = ops.maximum(s, 0.0) / ops.maximum(ops.max(s), 1e-30)
    if eps_at == "after_power":
        p = ops.power(ratio, alpha) + eps
    else:
        p = ops.power(ratio + eps, alpha)
    p = ops.maximum(p, 1e-4)
    return ops.matmul(u * p[None, :], ops.transpose(u))


def newton_schulz(m, iterations):
    """The coupled Newton-Schulz iteration of Richemond, Tam, Tang, Strub, Piot & Hill
    (ICML 2023, arXiv 2302.04817, Sec. 4.3, Eqs. 9-10) on a symmetric PSD ``m``.

    ``A_0 = m / ||m||_F``, ``B_0 = I``, then ``iterations`` times
    ``T = 3I - B_k A_k``, ``A_{k+1} = A_k T / 2``, ``B_{k+1} = T B_k / 2``. Returns
    ``(A_n, B_n, ||m||_F)``: ``A_n -> (m / ||m||_F)^{1/2}``, ``B_n -> (m / ||m||_F)^{-1/2}``
    on the range of ``m``. A mode with ``mu = s / ||m||_F`` far below ``1.5^{-2n}`` is not
    converged: its ``A`` and ``B`` grow by about 1.5 per iteration.
    """
    m = f32(m)
    eye = ops.eye(ops.shape(m)[0], dtype="float32")
    norm = ops.maximum(ops.sqrt(ops.sum(ops.square(m))), 1e-30)
    a, b = m / norm, eye
    for _ in range(int(iterations)):
        t = 0.5 * (3.0 * eye - ops.matmul(b, a))
        a, b = ops.matmul(a, t), ops.matmul(t, b)
    return a, b, norm


def newton_schulz_weights(corr, iterations=9, ridge=0.0):
    """NS predictor (Richemond et al. 2023, Sec. 4.3, Newton-Schulz proposition):
    ``Wp = A_n sqrt(||F||_F) + ridge I`` (:func:`newton_schulz` on F), ``-> F^{1/2}``."""
    corr = f32(corr)
    a, _, norm = newton_schulz(0.5 * (corr + ops.transpose(corr)), iterations)
    return a * ops.sqrt(norm) + ridge * ops.eye(ops.shape(corr)[0], dtype="float32")


def newton_schulz_squared_weights(corr, iterations=7, ridge=0.0):
    """NS^2 predictor (Richemond et al. 2023, Sec. 4.3): the NS predictor applied twice,
    ``Wp = NS(NS(F)) + ridge I -> F^{1/4}`` (``iterations`` per pass; their Tables 2-3
    use 7)."""
    root = newton_schulz_weights(corr, iterations)
    return newton_schulz_weights(root, iterations, ridge)


def stiefel_weights(corr, iterations=9, ridge=0.0):
    """Stiefel predictor (Richemond et al. 2023, Sec. 5.2, Stiefel-predictor proposition):
    ``B_n`` of :func:`newton_schulz` on ``F^T F``, then ``Wp = B_n F^T / ||B_n||_F + ridge I``,
    an estimate of the polar factor ``(F^T F)^{-1/2} F^T`` (the orthogonal projection onto
    F's range for a PSD F) divided by ``||B_n||_F``."""
    corr = f32(corr)
    corr = 0.5 * (corr + ops.transpose(corr))
    _, b, _ = newton_schulz(ops.matmul(ops.transpose(corr), corr), iterations)
    b_norm = ops.maximum(ops.sqrt(ops.sum(ops.square(b))), 1e-30)
    return (ops.matmul(b, ops.transpose(corr)) / b_norm
            + ridge * ops.eye(ops.shape(corr)[0], dtype="float32"))


def visser_weights(corr, iterations=50, step=0.5, ridge=0.0):
    """Visser predictor (Richemond et al. 2023, Sec. 4.3, Visser proposition, Eq. 8) on the
    normalised ``M = F / ||F||_F``: ``P_0 = I / (2 step)``, ``P_{k+1} = P_k + step (M - P_k^2)``,
    ``Wp = sqrt(||F||_F) P_n + ridge I``.

    ``P_n -> M^{1/2}``, so ``Wp -> F^{1/2}``, when ``step sqrt(s_max(M)) < 1`` (at each
    eigenvalue s the map is ``p -> p + step (s - p^2)``, whose slope at ``sqrt(s)`` is
    ``1 - 2 step sqrt(s)``), which ``step < 1`` ensures whatever F's scale. Eq. 8 on F
    itself diverges once ``step sqrt(s_max(F)) >= 1``: F's top eigenvalue reaches 1e2-1e5
    on projector outputs within an epoch, hence the normalisation (that of NS, Eq. 9). A
    mode with ``s = 0`` decays as about ``1 / (step (k + 2))`` (times ``sqrt(||F||_F)``).
    """
    corr = f32(corr)
    corr = 0.5 * (corr + ops.transpose(corr))
    norm = ops.maximum(ops.sqrt(ops.sum(ops.square(corr))), 1e-30)
    eye = ops.eye(ops.shape(corr)[0], dtype="float32")
    p = eye / (2.0 * step)
    for _ in range(int(iterations)):
        p = p + step * (corr / norm - ops.matmul(p, p))
    return ops.sqrt(norm) * p + ridge * eye


#: ``Config.closed_form`` -> the rule ``(F, iterations, ridge, step) -> Wp``.
CLOSED_FORMS = {
    "newton_schulz": lambda f, n, ridge, step: newton_schulz_weights(f, n, ridge),
    "ns2": lambda f, n, ridge, step: newton_schulz_squared_weights(f, n, ridge),
    "stiefel": lambda f, n, ridge, step: stiefel_weights(f, n, ridge),
    "visser": lambda f, n, ridge, step: visser_weights(f, n, step, ridge),
}


def linear_regression_predictor(z, z_target):
    """LRP (Richemond et al. 2023, Sec. 3.1, Eq. 4): the batch least-squares predictor
    ``P = (Z^T Z)^{-1} Z^T Z'`` for row-vector latents (``p = z P``), ``z`` and
    ``z_target`` [b, f] with ``Z^T Z`` invertible. Needs the target batch, so it is a
    function here, not a training predictor (docs/successors.md)."""
    z, z_target = f32(z), f32(z_target)
    return ops.solve(ops.matmul(ops.transpose(z), z), ops.matmul(ops.transpose(z), z_target))


def neumann_predictor(z, z_target):
    """NE (Richemond et al. 2023, Sec. 3.3, Eq. 6): ``P = 2 Z^T Z' - Z^T Z Z^T Z'``, LRP with
    ``(Z^T Z)^{-1}`` replaced by its first-order Neumann expansion ``2I - Z^T Z``. A function
    here, not a training predictor (it needs the target batch)."""
    z, z_target = f32(z), f32(z_target)
    cross = ops.matmul(ops.transpose(z), z_target)
    return 2.0 * cross - ops.matmul(ops.matmul(ops.transpose(z), z), cross)


def _direct_pred_rule(config):
    eps, power = config.predictor_eps, config.predictor_power
    return lambda f: direct_pred_weights(f, eps, power)


def _direct_copy_rule(config):
    eps, norm = config.predictor_eps, config.directcopy_norm
    return lambda f: direct_copy_weights(f, eps, norm)


def _direct_set_rule(config):
    alpha, eps, eps_at = config.directset_alpha, config.predictor_eps, config.directset_eps_at
    return lambda f: direct_set_weights(f, alpha, eps, eps_at)


def _closed_form_rule(config):
    closed = CLOSED_FORMS[config.closed_form]
    n, ridge, step = config.closed_form_iterations, config.closed_form_ridge, config.visser_step
    return lambda f: closed(f, n, ridge, step)


#: ``Config.predictor`` of a computed predictor -> a builder ``config -> rule``, the
#: rule a pure function ``F -> Wp`` (float32 [d, d]).
PREDICTOR_RULES = {"directpred": _direct_pred_rule, "directcopy": _direct_copy_rule,
                   "directset": _direct_set_rule, "closed_form": _closed_form_rule}


def predictor_rule(config):
    """The pure rule ``F -> Wp`` of ``config.predictor`` (``directpred``, ``directcopy``,
    ``directset`` or ``closed_form``), with its options bound."""
    if config.predictor not in PREDICTOR_RULES:
        raise ValueError(f"No computed-predictor rule for predictor {config.predictor!r}. "
                         f"Valid: {sorted(PREDICTOR_RULES)}")
    return PREDICTOR_RULES[config.predictor](config)


def symmetrize(w):
    """``(W + W^T) / 2``: symmetry regularisation of a square linear predictor."""
    return 0.5 * (w + ops.transpose(w))


def symmetrize_two_layer(k1, k2):
    """Symmetry regularisation of a 2-layer predictor (original TF2 reproduction):
    ``W1 <- (W1 + W2^T) / 2``, ``W2 <- W1^T``. Works on Keras kernels
    ``k1`` [d, h], ``k2`` [h, d] (the rule is the same for transposes).
    Returns ``(new_k1, new_k2)``.
    """
    new_k1 = 0.5 * (k1 + ops.transpose(k2))
    return new_k1, ops.transpose(new_k1)
