"""The closed-form predictors of Richemond, Tam, Tang, Strub, Piot & Hill (ICML 2023, arXiv
2302.04817) as measured claims (NumPy only; the package's keras.ops rules are
``models/predictors.py`` and are tested against the same iterations in
``tests/models/test_closed_form.py``).

Their batch predictors act on row-vector latents ``Z`` [b, f] (``p = z P``) and the batch
covariance ``Sigma = Z^T Z / b``; here ``Sigma`` is a symmetric PSD matrix with a chosen
spectrum. What is measured:

- the iterations at the paper's iteration counts reach their matrix functions (Sec. 4.3,
  Eqs. 8-10; Sec. 5.2), which in Sigma's eigenbasis are DirectSet(alpha) (Wang et al. 2021)
  times a scale: NS and Visser ``sqrt(s_max) r^{1/2}``, NS^2 ``s_max^{1/4} r^{1/4}``, Stiefel
  ``r^0 / ||Sigma^{-1}||_F`` (``r = s / s_max``; derived here);
- with finitely many iterations the small modes are not converged: Newton-Schulz multiplies
  them by about 1.5 per iteration, so NS and Stiefel map a small eigenvalue linearly
  (DirectSet(1)-like), and Visser leaves a null mode at about ``1 / (eta (n + 2))`` (derived
  here);
- Prop. 1 / Eq. 5: with the LRP predictor (Eq. 4) the loss is the squared norm of ``Z'``
  projected on the orthogonal complement of ``Z``'s column space;
- the NE predictor (Eq. 6) is LRP to second order in ``||I - Z^T Z||``.
"""

from __future__ import annotations

import numpy as np

SOURCE = "Richemond et al. 2023 (arXiv 2302.04817)"
#: Iterations of the paper's Tables 2-3 (NS 9, NS^2 7 per pass, Stiefel 9); Visser's are not
#: in their main text: the package's closed_form_visser factory (50 iterations, step 0.5 on
#: Sigma / ||Sigma||_F).
PAPER_N = {"newton_schulz": 9, "ns2": 7, "stiefel": 9, "visser": 50}
VISSER_STEP = 0.5
#: A spectrum with condition number 10 inside every iteration's converged range.
SPECTRUM = np.geomspace(5.0, 0.5, 8)


def _claim(cid, source, claim, measured, threshold, direction, assumptions="none"):
    from experiments.theory.claims import _claim as make
    return make(cid, source, claim, measured, threshold, direction, assumptions)


def spectral(s, seed=0):
    """``(Q diag(s) Q^T, Q)`` with a seeded random orthonormal ``Q``."""
    s = np.asarray(s, dtype=float)
    q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(len(s), len(s))))
    return (q * s) @ q.T, q


def matrix_function(sigma, fn):
    s, u = np.linalg.eigh(sigma)
    return (u * fn(s)) @ u.T


def newton_schulz(m, n):
    """Eqs. 9-10: ``(A_n, B_n, ||m||_F)`` from ``A_0 = m / ||m||_F``, ``B_0 = I``."""
    eye = np.eye(len(m))
    a, b = m / np.linalg.norm(m), eye
    for _ in range(n):
        t = 0.5 * (3 * eye - b @ a)
        a, b = a @ t, t @ b
    return a, b, np.linalg.norm(m)


def predictor(kind, sigma, n, step=VISSER_STEP):
    """The closed-form predictor ``kind`` of ``sigma`` after ``n`` iterations (no ridge)."""
    if kind == "newton_schulz":
        a, _, norm = newton_schulz(sigma, n)
        return a * np.sqrt(norm)
    if kind == "ns2":
        return predictor("newton_schulz", predictor("newton_schulz", sigma, n), n)
    if kind == "stiefel":
        _, b, _ = newton_schulz(sigma.T @ sigma, n)
        return b @ sigma.T / np.linalg.norm(b)
    if kind == "visser":  # Eq. 8 on sigma / ||sigma||_F, rescaled (models/predictors.py)
        norm = np.linalg.norm(sigma)
        p = np.eye(len(sigma)) / (2 * step)
        for _ in range(n):
            p = p + step * (sigma / norm - p @ p)
        return np.sqrt(norm) * p
    raise ValueError(f"kind must be one of {sorted(PAPER_N)}. Received: kind={kind!r}")


def limit(kind, sigma):
    """The limit as scale x DirectSet(alpha) in sigma's eigenbasis (full-rank PSD sigma)."""
    s, u = np.linalg.eigh(sigma)
    r = s / s.max()
    alpha, scale = {"newton_schulz": (0.5, np.sqrt(s.max())), "visser": (0.5, np.sqrt(s.max())),
                    "ns2": (0.25, s.max() ** 0.25),
                    "stiefel": (0.0, 1.0 / np.linalg.norm(1.0 / s))}[kind]
    return (u * (scale * r ** alpha)) @ u.T


def limit_errors(spectrum=SPECTRUM, seed=0):
    """``{kind: relative Frobenius error at the paper's n}`` against :func:`limit`."""
    sigma, _ = spectral(spectrum, seed)
    return {kind: float(np.linalg.norm(predictor(kind, sigma, n) - limit(kind, sigma))
                        / np.linalg.norm(limit(kind, sigma))) for kind, n in PAPER_N.items()}


def eigenvalue_map(kind, s, n, step=VISSER_STEP):
    """Eigenvalues of the predictor of ``diag(s)`` (sorted as ``s``)."""
    return np.diag(predictor(kind, np.diag(np.asarray(s, dtype=float)), n, step))


def small_mode_slopes(n=9):
    """Log-log slope of NS's and Stiefel's eigenvalue maps between r = 1e-6 and 1e-5 (top
    eigenvalue 1, 20 modes between 0.05 and 1)."""
    top = np.geomspace(1.0, 0.05, 20)
    out = {}
    for kind in ("newton_schulz", "stiefel"):
        p = eigenvalue_map(kind, np.concatenate([top, [1e-5, 1e-6]]), n)
        out[kind] = float(np.log(p[-2] / p[-1]) / np.log(10.0))
    return out


def visser_null_floor(n=PAPER_N["visser"], step=VISSER_STEP):
    """``p_n eta (n + 2)`` of a null mode of Sigma (Visser, eigenvalue 0)."""
    return float(eigenvalue_map("visser", [1.0, 0.0], n, step)[1] * step * (n + 2))


def lrp_projection_gap(b=64, f=16, seed=0):
    """Prop. 1: max of the relative gap between the LRP loss and ``||Proj_perp Z'||_F^2`` and
    of ``||Pi^2 - Pi||``, ``||Pi - Pi^T||`` for ``Pi = Z (Z^T Z)^{-1} Z^T``."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(b, f))
    zt = z @ rng.normal(size=(f, f)) * 0.3 + rng.normal(size=(b, f))
    p = np.linalg.solve(z.T @ z, z.T @ zt)  # Eq. 4
    proj = z @ np.linalg.solve(z.T @ z, z.T)
    loss = np.linalg.norm(z @ p - zt) ** 2
    perp = np.linalg.norm((np.eye(b) - proj) @ zt) ** 2  # Eq. 5
    return float(max(abs(loss - perp) / perp, np.abs(proj @ proj - proj).max(),
                     np.abs(proj - proj.T).max()))


def ne_errors(deltas=(0.2, 0.1, 0.05, 0.025), b=64, f=8, seed=0):
    """``||NE - LRP||_F / ||LRP||_F`` for batches with ``Z^T Z = V diag(1 - delta e) V^T``,
    ``e`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.normal(size=(b, f)))
    v, _ = np.linalg.qr(rng.normal(size=(f, f)))
    e = np.linspace(-1.0, 1.0, f)
    noise = rng.normal(size=(b, f))
    errors = []
    for delta in deltas:
        z = (u * np.sqrt(1.0 - delta * e)) @ v.T
        zt = z + 0.3 * noise
        lrp = np.linalg.solve(z.T @ z, z.T @ zt)
        ne = 2 * z.T @ zt - z.T @ z @ z.T @ zt  # Eq. 6
        errors.append(np.linalg.norm(ne - lrp) / np.linalg.norm(lrp))
    return np.array(errors)


def all_claims(smoke=False):
    """The claims (list of dicts, as :func:`experiments.theory.claims.all_claims`)."""
    del smoke  # every claim takes well under a second
    errors = limit_errors()
    slopes = small_mode_slopes()
    ne = ne_errors()
    order = np.log2(ne[:-1] / ne[1:])
    floor = visser_null_floor()
    return [
        _claim("closed_form_limits_at_paper_n", SOURCE + " Sec. 4.3 (Visser and Newton-Schulz "
               "propositions, Eqs. 8-10, NS^2), Sec. 5.2 (Stiefel proposition); the DirectSet "
               "form: derived here",
               "at the paper's n (NS 9, NS^2 7 per pass, Stiefel 9; Visser 50 at step 0.5, "
               "chosen here) on a spectrum 5 ... 0.5, each predictor is its limit, scale x "
               "DirectSet(alpha) in Sigma's eigenbasis: NS and Visser sqrt(s_max) r^1/2, NS^2 "
               "s_max^1/4 r^1/4, Stiefel r^0 / ||Sigma^-1||_F (relative errors "
               + ", ".join(f"{k} {v:.1e}" for k, v in errors.items()) + "; max)",
               max(errors.values()), 1e-3, "<"),
        _claim("closed_form_small_modes_linear", "derived here (Eqs. 9-10 per eigenvalue: T ~ "
               "3/2 while A_k B_k << 1)",
               "with n = 9 the modes far below the top are not converged: the log-log slope of "
               "the eigenvalue map between r = 1e-6 and 1e-5 is 1 (DirectSet(1)-like) for NS "
               f"({slopes['newton_schulz']:.4f}, limit 1/2) and Stiefel "
               f"({slopes['stiefel']:.4f}, limit 0); measured: max |slope - 1|",
               max(abs(v - 1.0) for v in slopes.values()), 0.01, "<"),
        _claim("visser_null_mode_floor", "derived here (Eq. 8 at s = 0: 1/p grows by eta "
               "(1 + eta p) per step); cf. " + SOURCE + " Sec. 6 (Visser insensitive to the "
               "ridge)",
               "Visser leaves a null mode of Sigma at about 1 / (eta (n + 2)), a ridge of its "
               f"own (n 50, eta 0.5, ||Sigma||_F = 1: p_n eta (n + 2) = {floor:.3f}); measured: |that - 1|",
               abs(floor - 1.0), 0.1, "<"),
        _claim("lrp_loss_is_orthogonal_complement", SOURCE + " Prop. 1, Eqs. 4-5",
               "the loss ||Z P* - Z'||_F^2 of the LRP predictor P* = (Z^T Z)^-1 Z^T Z' equals "
               "||Proj_perp(Z) Z'||_F^2, and Z (Z^T Z)^-1 Z^T is symmetric and idempotent "
               "(b 64, f 16; max of the relative gap and both residuals)",
               lrp_projection_gap(), 1e-10, "<"),
        _claim("ne_is_lrp_to_second_order", SOURCE + " Sec. 3.3 (NE proposition, Eq. 6)",
               "NE - LRP = -(Z^T Z)^-1 (I - Z^T Z)^2 Z^T Z': with ||I - Z^T Z|| = delta = "
               "0.2, 0.1, 0.05, 0.025 the relative gap is " + ", ".join(f"{x:.2e}" for x in ne)
               + "; measured: the smallest observed order log2(gap(delta) / gap(delta/2))",
               float(order.min()), 1.9, ">"),
    ]
