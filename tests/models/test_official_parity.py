"""The package's train step against a NumPy transcription of the official DirectPred step.

Official code: facebookresearch/luckmatters ``ssl/real-dataset/byol_trainer.py`` at commit
cb23d10 (the one its README validates the DirectPred command on). One step there is::

    z_v = online(view_v)                     # detached copies feed the accumulator
    F  <- first batch: E[z z^T]; then rho F + (1 - rho) E[z z^T]   (both views, uncentred)
    loss = mean_b[-2 cos(Wp z_1, t(view_2)) - 2 cos(Wp z_2, t(view_1))]
    SGD (lr, momentum, coupled weight decay) on the online net AND the predictor
    if predictor_reg == "corr" and niter % freq == 0: Wp <- U diag(p) U^T,
        p = clamp(sqrt(clamp(s, 0) / max s) + eps, 1e-4)        (balance_type boost_scale)
    if predictor_reg == "symmetric": Wp <- (Wp + Wp^T) / 2     (every step)
    target <- m target + (1 - m) online      (the target starts as its own random draw)

Transcribed here in float64 for a linear encoder ``z = W x`` and an identity projector
(the network is not the point: the order and the maths of the step are), then compared
with :class:`models.SiameseNetwork` on the same initial weights and batches, several steps.
"""

import numpy as np
import pytest
import tensorflow as tf

from config import get_config
from models import SiameseNetwork, build_optimizer, heads

DIM, BATCH, STEPS = 6, 8, 7
LR, MOMENTUM, WD, TAU, RHO, EPS = 0.05, 0.9, 4e-4, 0.9, 0.3, 0.1


def parity_config(**overrides):
    """DirectPred (or a linear SGD predictor) on a linear encoder, the paper's step."""
    values = dict(dataset="gaussian", backbone="linear", image_size=DIM, width=1.0,
                  projector="none", projection_dim=DIM, batch_size=BATCH, learning_rate=LR,
                  momentum=MOMENTUM, weight_decay=WD, ema_tau=TAU, knn_every=0)
    factory = overrides.pop("factory", "direct_pred")
    if factory.startswith("direct_pred"):
        values.update(corr_rho=RHO, predictor_eps=EPS)
    return get_config(factory, **{**values, **overrides})


def batches(seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(STEPS, BATCH, DIM))
    noise = 0.3 * rng.normal(size=(2, STEPS, BATCH, DIM))
    return (base + noise[0]).astype("float32"), (base + noise[1]).astype("float32")


class Official:
    """The official step (``byol_trainer.py``) in NumPy, float64, row-vector form."""

    def __init__(self, W, Wp, Wa, freq=1, predictor_reg="corr"):
        self.W, self.Wp, self.Wa = (np.array(a, np.float64) for a in (W, Wp, Wa))
        self.freq, self.reg = freq, predictor_reg
        self.buf = {}  # torch SGD momentum buffers, never reset
        self.F = None
        self.niter = 0

    @staticmethod
    def neg_cos_grad(p, t):
        """``-2 cos(p, t)`` per row and its gradient in ``p``."""
        pn, tn = np.linalg.norm(p, axis=1, keepdims=True), np.linalg.norm(t, axis=1, keepdims=True)
        cos = np.sum(p * t, axis=1, keepdims=True) / (pn * tn)
        return -2 * cos[:, 0], -2 * (t / tn - cos * p / pn) / pn

    def loss_and_grads(self, x1, x2):
        z1, z2 = x1 @ self.W.T, x2 @ self.W.T
        p1, p2 = z1 @ self.Wp.T, z2 @ self.Wp.T
        t1, t2 = x1 @ self.Wa.T, x2 @ self.Wa.T  # targets_to_view_2, targets_to_view_1
        l1, g1 = self.neg_cos_grad(p1, t2)
        l2, g2 = self.neg_cos_grad(p2, t1)
        n = len(x1)
        g1, g2 = g1 / n, g2 / n
        gWp = g1.T @ z1 + g2.T @ z2
        gW = (g1 @ self.Wp).T @ x1 + (g2 @ self.Wp).T @ x2
        return np.mean(l1 + l2), gW, gWp, (z1, z2)

    def sgd(self, name, w, g):
        d = g + WD * w
        self.buf[name] = d if name not in self.buf else MOMENTUM * self.buf[name] + d
        return w - LR * self.buf[name]

    def step(self, x1, x2):
        x1, x2 = np.float64(x1), np.float64(x2)
        loss, gW, gWp, (z1, z2) = self.loss_and_grads(x1, x2)
        z = np.concatenate([z1, z2])
        corr = np.einsum("bi,bj->ij", z, z) / len(z)
        self.F = corr if self.F is None else RHO * self.F + (1 - RHO) * corr
        self.W = self.sgd("W", self.W, gW)
        self.Wp = self.sgd("Wp", self.Wp, gWp)
        if self.reg == "corr" and self.niter % self.freq == 0:
            s, u = np.linalg.eigh(self.F)
            p = np.maximum(np.sqrt(np.maximum(s, 0) / s.max()) + EPS, 1e-4)
            self.Wp = (u * p) @ u.T
        elif self.reg == "symmetric":
            self.Wp = (self.Wp + self.Wp.T) / 2
        self.Wa = TAU * self.Wa + (1 - TAU) * self.W
        self.niter += 1
        return loss


def weights(model):
    """``(W, Wp, Wa)`` in the column-vector convention (Keras kernels transposed)."""
    W = model.online_encoder.get_layer("linear").kernel.numpy().T
    Wp = heads.dense_kernels(model.predictor)[0].numpy().T
    Wa = model.target_encoder.get_layer("linear").kernel.numpy().T
    return W, Wp, Wa


def run_both(config, predictor_reg="corr", seed=0):
    """Trains the package and the transcription side by side; yields after every step."""
    tf.keras.utils.set_random_seed(seed)
    model = SiameseNetwork(config)
    model.compile(optimizer=build_optimizer(config))
    model.set_total_steps(STEPS)
    official = Official(*weights(model), freq=config.predictor_freq, predictor_reg=predictor_reg)
    x1, x2 = batches(seed)
    for k in range(STEPS):
        model.train_on_batch((x1[k], x2[k]))
        official.step(x1[k], x2[k])
        yield k, model, official


def assert_same_weights(model, official, k):
    for name, ours, ref in zip(("W", "Wp", "Wa"), weights(model),
                               (official.W, official.Wp, official.Wa)):
        np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=2e-6,
                                   err_msg=f"{name} after step {k}")


def test_loss_is_the_official_loss_plus_4_with_the_same_gradients():
    config = parity_config()
    tf.keras.utils.set_random_seed(1)
    model = SiameseNetwork(config)
    official = Official(*weights(model))
    x1, x2 = batches(1)
    with tf.GradientTape() as tape:
        loss, _ = model.compute_ssl_loss(x1[0], x2[0])
    kernel = model.online_encoder.get_layer("linear").kernel
    (grad,) = tape.gradient(loss, [kernel])
    ref_loss, gW, _, _ = official.loss_and_grads(x1[0], x2[0])
    np.testing.assert_allclose(float(loss), ref_loss + 4.0, rtol=1e-6)
    np.testing.assert_allclose(grad.numpy().T, gW, rtol=1e-4, atol=1e-7)


def test_correlation_accumulator_follows_the_official_accumulator():
    for k, model, official in run_both(parity_config()):
        np.testing.assert_allclose(model.correlation.numpy(), official.F, rtol=1e-5, atol=1e-6,
                                   err_msg=f"F after step {k}")


def test_direct_pred_freq_1_follows_the_official_step():
    for k, model, official in run_both(parity_config()):
        assert_same_weights(model, official, k)


def test_direct_pred_freq_5_trains_wp_between_recomputations_with_momentum_carried():
    config = parity_config(factory="direct_pred_freq_5")
    assert config.predictor_freq == 5 and config.predictor_trained_between
    set_wps = {}
    for k, model, official in run_both(config):
        assert_same_weights(model, official, k)
        set_wps[k] = official.Wp.copy()
    # Not vacuous: between the settings (steps 0 and 5) SGD moved Wp every step.
    assert not np.allclose(set_wps[1], set_wps[0], atol=1e-4)
    assert not np.allclose(set_wps[4], set_wps[3], atol=1e-4)


def test_a_frozen_freq_5_predictor_is_not_the_official_algorithm():
    """The option that keeps Wp frozen between settings (the TF2 reproduction, and every
    config.json before version 3) departs from the official step after step 1."""
    config = parity_config(factory="direct_pred_freq_5", predictor_trained_between=False)
    for k, model, official in run_both(config):
        if k == 1:
            ours, ref = weights(model)[1], official.Wp
            assert np.abs(ours - ref).max() > 1e-4
            break


def test_target_is_its_own_draw_then_the_official_ema():
    config = parity_config()
    assert config.target_init == "independent"
    for k, model, official in run_both(config, seed=2):
        np.testing.assert_allclose(weights(model)[2], official.Wa, rtol=1e-4, atol=2e-6)
    # The start was an independent draw, not a copy of the online network.
    tf.keras.utils.set_random_seed(2)
    W, _, Wa = weights(SiameseNetwork(config))
    assert not np.allclose(W, Wa, atol=0.05)


def test_sgd_baseline_is_the_official_symmetric_linear_predictor():
    config = parity_config(factory="byol_baseline")
    assert config.predictor == "linear" and config.symmetry
    for k, model, official in run_both(config, predictor_reg="symmetric", seed=3):
        assert_same_weights(model, official, k)


@pytest.mark.parametrize("freq", [1, 5])
def test_factories_carry_the_official_step(freq):
    """The published factories themselves (not only the test's overrides) run this step."""
    factory = "direct_pred" if freq == 1 else "direct_pred_freq_5"
    config = get_config(factory)
    assert (config.predictor, config.predictor_freq, config.corr_rho, config.predictor_eps,
            config.target_init, config.corr_center) == ("directpred", freq, 0.3, 0.1,
                                                         "independent", False)
    assert (config.learning_rate, config.momentum, config.weight_decay, config.ema_tau,
            config.optimizer) == (0.03, 0.9, 4e-4, 0.996, "sgd")
