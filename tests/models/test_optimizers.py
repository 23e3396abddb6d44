"""models.optimizers: each optimizer against a NumPy reference, the predictor's own
rate and decay, the warm-up + cosine schedule, the scaling rule and serialisation.

Tiny on purpose: plain ``keras.Variable``s (a 3x2 kernel and a 2-vector bias) or a
two-Dense-layer model; no ResNet.
"""

import math

import keras
import numpy as np
import pytest

from config import Config
from models import optimizers as opt

KERNEL0 = np.array([[1.0, -2.0], [0.5, 3.0], [-1.5, 0.25]])
BIAS0 = np.array([0.3, -0.7])
RNG = np.random.default_rng(0)
GRADS = [(RNG.normal(size=(3, 2)), RNG.normal(size=(2,))) for _ in range(3)]


def config(**changes):
    return Config().replace(**changes)


def trust(kind, eta=1.0):
    """``lars_eta`` for the optimizers that have one (it is refused by the others)."""
    return {"lars_eta": eta} if kind in ("lars", "larc") else {}


def run(optimizer, grads=GRADS):
    """Applies ``grads`` (list of (kernel grad, bias grad)) to fresh variables."""
    kernel = keras.Variable(KERNEL0.astype("float32"), name="kernel")
    bias = keras.Variable(BIAS0.astype("float32"), name="bias")
    for gk, gb in grads:
        optimizer.apply([gk.astype("float32"), gb.astype("float32")], [kernel, bias])
    return kernel.numpy().astype(np.float64), bias.numpy().astype(np.float64)


# ---- NumPy references (one variable at a time) ------------------------------------

def ref_sgd(w, grads, lr, mu):
    v = np.zeros_like(w)
    for g in grads:
        v = mu * v - lr * g
        w = w + v
    return w


def ref_lars(w, grads, lr, mu, wd, eta, adapt):
    v = np.zeros_like(w)
    for g in grads:
        local = lr
        if adapt:
            g = g + wd * w
            local = lr * eta * np.linalg.norm(w) / np.linalg.norm(g)
        v = mu * v + local * g
        w = w - v
    return w


def ref_larc(w, grads, lr, mu, wd, eta, adapt, eps=1e-8):
    v = np.zeros_like(w)
    for g in grads:
        if adapt:
            trust_lr = eta * np.linalg.norm(w) / (np.linalg.norm(g) + wd * np.linalg.norm(w)
                                                  + eps)
            g = min(trust_lr / lr, 1.0) * (g + wd * w)
        v = mu * v + g
        w = w - lr * v
    return w


def ref_adamw(w, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-7):
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        w = w - lr * np.sqrt(1 - b2 ** t) / (1 - b1 ** t) * m / (np.sqrt(v) + eps)
    return w


def ref_lamb(w, grads, lr, wd, b1=0.9, b2=0.999, eps=1e-7):
    m = v = np.zeros_like(w)
    for t, g in enumerate(grads, start=1):
        w = w - lr * wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
        w = w - np.linalg.norm(w) / np.linalg.norm(update) * lr * update
    return w


def reference(kind, w, grads, adapt, lr=0.1, mu=0.9, wd=0.05, eta=0.001):
    """The reference of ``kind``; ``adapt=False`` for a 1-D (BN / bias) variable."""
    if kind == "sgd":
        return ref_sgd(w, grads, lr, mu)
    if kind == "lars":
        return ref_lars(w, grads, lr, mu, wd, eta, adapt)
    if kind == "larc":
        return ref_larc(w, grads, lr, mu, wd, eta, adapt)
    if kind == "adamw":
        return ref_adamw(w, grads, lr, wd if adapt else 0.0)
    return ref_lamb(w, grads, lr, wd if adapt else 0.0)


@pytest.mark.parametrize("kind", ["sgd", "lars", "larc", "adamw", "lamb"])
def test_optimizer_matches_numpy_reference(kind):
    c = config(optimizer=kind, learning_rate=0.1, momentum=0.9, weight_decay=0.05)
    kernel, bias = run(opt.build_optimizer(c))
    np.testing.assert_allclose(
        kernel, reference(kind, KERNEL0, [g for g, _ in GRADS], adapt=True), rtol=2e-5,
        atol=1e-6)
    np.testing.assert_allclose(
        bias, reference(kind, BIAS0, [g for _, g in GRADS], adapt=False), rtol=2e-5,
        atol=1e-6)


@pytest.mark.parametrize("kind", ["lars", "larc", "adamw", "lamb"])
def test_weight_decay_spares_bias_and_batchnorm(kind):
    """A large decay moves the kernel, never the 1-D variable."""
    with_decay = run(opt.build_optimizer(config(optimizer=kind, weight_decay=0.5)))
    without = run(opt.build_optimizer(config(optimizer=kind, weight_decay=0.0)))
    assert np.abs(with_decay[0] - without[0]).max() > 1e-4
    np.testing.assert_allclose(with_decay[1], without[1], rtol=1e-6)


def test_lars_and_larc_leave_1d_variables_unadapted():
    """BN / bias: plain momentum SGD, as the excluded parameters of SimCLR / BYOL."""
    plain = ref_sgd(BIAS0, [g for _, g in GRADS], 0.1, 0.9)
    for kind in ("lars", "larc"):
        _, bias = run(opt.build_optimizer(config(optimizer=kind, learning_rate=0.1)))
        np.testing.assert_allclose(bias, plain, rtol=2e-5)


def test_sgd_leaves_weight_decay_to_the_train_step():
    assert opt.uses_coupled_weight_decay(config())
    for kind in ("lars", "larc", "adamw", "lamb"):
        assert not opt.uses_coupled_weight_decay(config(optimizer=kind))
    a = run(opt.build_optimizer(config(weight_decay=0.5)))
    b = run(opt.build_optimizer(config(weight_decay=0.0)))
    np.testing.assert_array_equal(a[0], b[0])


def test_larc_clips_where_lars_scales():
    """Large trust ratio (small gradient): LARC clips the local rate to 1, i.e. plain
    momentum SGD on g + wd w; LARS multiplies the rate by the trust ratio."""
    small = [(1e-4 * g, gb) for g, gb in GRADS[:1]]
    lr, wd = 0.1, 1e-4
    larc, _ = run(opt.LARC(lr, momentum=0.9, weight_decay=wd, eta=0.001), small)
    lars, _ = run(opt.LARS(lr, momentum=0.9, weight_decay=wd, eta=0.001), small)
    d = small[0][0] + wd * KERNEL0
    np.testing.assert_allclose(larc, KERNEL0 - lr * d, rtol=1e-5)
    trust = 0.001 * np.linalg.norm(KERNEL0) / np.linalg.norm(d)
    assert trust > 1.0
    np.testing.assert_allclose(lars, KERNEL0 - lr * trust * d, rtol=1e-5)
    # Small trust ratio: LARC's step is trust_lr (not lr * trust), still below lr.
    larc_small, _ = run(opt.LARC(lr, momentum=0.0, eta=0.001), GRADS[:1])
    g = GRADS[0][0]
    trust_lr = 0.001 * np.linalg.norm(KERNEL0) / (np.linalg.norm(g) + 1e-8)
    assert trust_lr < lr
    np.testing.assert_allclose(larc_small, KERNEL0 - trust_lr * g, rtol=1e-5)


# ---- the predictor's own learning rate and weight decay ----------------------------

def two_layer_model():
    """Two identical Dense layers: "backbone_dense" and "predictor_dense"."""
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(3, name="backbone_dense", kernel_initializer="ones")(inputs)
    outputs = keras.layers.Dense(3, name="predictor_dense", kernel_initializer="ones")(hidden)
    return keras.Model(inputs, outputs)


def step(optimizer, model, grad_scale=1e-3):
    variables = model.trainable_variables
    before = [v.numpy().copy() for v in variables]
    # Not parallel to the all-ones kernels (else LARS's step would ignore the decay).
    grads = [grad_scale * np.linspace(0.5, 1.5, math.prod(v.shape), dtype="float32")
             .reshape(v.shape) for v in variables]
    optimizer.apply(grads, variables)
    return {v.path: v.numpy() - b for v, b in zip(variables, before)}


@pytest.mark.parametrize("kind", ["sgd", "lars", "larc", "adamw", "lamb"])
def test_predictor_learning_rate_multiplier(kind):
    # LARC's trust rate (eta ||w|| / ||g|| = 10) stays above both rates: no clipping.
    c = config(optimizer=kind, learning_rate=0.01, weight_decay=0.0,
               predictor_lr_multiplier=10.0, **trust(kind))
    optimizer = opt.build_optimizer(c)
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    moved = step(optimizer, two_layer_model(), grad_scale=0.1)
    slow = moved["backbone_dense/kernel"]
    fast = moved["predictor_dense/kernel"]
    assert np.abs(slow).min() > 1e-4
    np.testing.assert_allclose(fast, 10.0 * slow, rtol=1e-3)


@pytest.mark.parametrize("kind", ["lars", "larc", "adamw", "lamb"])
def test_predictor_weight_decay(kind):
    """predictor_weight_decay=0: the predictor moves as without any decay, the rest not."""
    decayed = config(optimizer=kind, learning_rate=0.1, weight_decay=0.1,
                     predictor_weight_decay=0.0, **trust(kind))
    optimizer = opt.build_optimizer(decayed)
    assert isinstance(optimizer, keras.optimizers.MultiOptimizer)
    moved = step(optimizer, two_layer_model(), grad_scale=0.1)
    plain = step(opt.build_optimizer(decayed.replace(weight_decay=0.0)), two_layer_model(),
                 grad_scale=0.1)
    np.testing.assert_allclose(moved["predictor_dense/kernel"],
                               plain["predictor_dense/kernel"], rtol=1e-6)
    assert np.abs(moved["backbone_dense/kernel"] - plain["backbone_dense/kernel"]).min() > 1e-5


def test_sgd_predictor_decay_needs_no_second_optimizer():
    """SGD's decay is the train step's: a predictor decay alone keeps one SGD (as before)."""
    optimizer = opt.build_optimizer(config(predictor_weight_decay=0.0))
    assert type(optimizer) is keras.optimizers.SGD


def test_factory_defaults_build_the_papers_sgd():
    from config import get_config
    base = opt.build_optimizer(get_config("byol"))
    assert type(base) is keras.optimizers.SGD
    assert float(base.learning_rate) == pytest.approx(0.03) and base.momentum == 0.9
    multi = opt.build_optimizer(get_config("simsiam_symmetric_predictor"))
    rates = sorted(float(o.learning_rate) for o in multi.optimizers)
    assert rates == pytest.approx([0.03, 0.3])


def test_the_old_import_path_still_works():
    from models import build_optimizer
    assert type(build_optimizer(config())) is keras.optimizers.SGD


# ---- schedule ----------------------------------------------------------------------

def expected_rate(k, base, total, warmup, warmup_lr, final):
    if k < warmup:
        return warmup_lr + (base - warmup_lr) * k / warmup
    progress = min((k - warmup) / (total - warmup), 1.0)
    return final + 0.5 * (base - final) * (1 + math.cos(math.pi * progress))


def test_warmup_cosine_values():
    schedule = opt.WarmupCosineDecay(0.4, total_steps=100, warmup_steps=10, warmup_lr=0.1,
                                     final_lr=0.01)
    for k, value in [(0, 0.1), (5, 0.25), (10, 0.4), (55, 0.205), (100, 0.01), (150, 0.01)]:
        assert float(schedule(k)) == pytest.approx(value, rel=1e-5), k
    for k in (0, 3, 9, 10, 37, 55, 99):
        assert float(schedule(k)) == pytest.approx(
            expected_rate(k, 0.4, 100, 10, 0.1, 0.01), rel=1e-5)
    no_warmup = opt.WarmupCosineDecay(1.0, total_steps=10)
    assert float(no_warmup(0)) == pytest.approx(1.0) and float(no_warmup(10)) == 0.0
    with pytest.raises(ValueError, match="warmup_steps"):
        opt.WarmupCosineDecay(1.0, total_steps=5, warmup_steps=6)


def test_schedule_from_config_and_scaling_rule():
    c = config(lr_schedule="warmup_cosine", learning_rate=0.2, warmup_epochs=2,
               warmup_lr=0.02, final_lr=0.002, epochs_pretraining=10, batch_size=512,
               lr_scaling="linear")
    # The base rate after the scaling rule: learning_rate * batch_size / 256 under
    # lr_scaling="linear" (Goyal et al. 2017; SimCLR, BYOL, SimSiam), else learning_rate.
    constant = config(learning_rate=0.2, batch_size=512, lr_scaling="linear")
    assert opt.learning_rate_schedule(constant) == pytest.approx(0.4)
    assert opt.learning_rate_schedule(constant.replace(lr_scaling="none")) == pytest.approx(0.2)
    schedule = opt.learning_rate_schedule(c, steps_per_epoch=5)
    assert isinstance(schedule, opt.WarmupCosineDecay)
    assert (schedule.total_steps, schedule.warmup_steps) == (50, 10)
    assert (schedule.base_lr, schedule.warmup_lr, schedule.final_lr) == pytest.approx(
        (0.4, 0.04, 0.004))
    assert opt.learning_rate_schedule(config(learning_rate=0.1, batch_size=64,
                                             lr_scaling="linear")) == pytest.approx(0.025)
    assert opt.learning_rate_schedule(config()) == 0.03
    short = opt.learning_rate_schedule(c.replace(epochs_pretraining=1), steps_per_epoch=5)
    assert (short.total_steps, short.warmup_steps) == (5, 5)  # warm-up cut to the run


def test_predictor_follows_the_schedule_times_its_multiplier():
    c = config(optimizer="lars", lr_schedule="warmup_cosine", learning_rate=0.1,
               warmup_epochs=1, warmup_lr=0.01, final_lr=0.001, epochs_pretraining=4,
               predictor_lr_multiplier=10.0)
    multi = opt.build_optimizer(c, steps_per_epoch=3)
    default = multi._optimizer_map.default_optimizer
    fast = multi._optimizer_map["predictor_dense/kernel"]
    assert fast is not default
    for k in (0, 1, 3, 7, 12):
        for optimizer in (default, fast):
            optimizer.iterations.assign(k)
        expected = expected_rate(k, 0.1, 12, 3, 0.01, 0.001)
        assert float(default.learning_rate) == pytest.approx(expected, rel=1e-5)
        assert float(fast.learning_rate) == pytest.approx(10 * expected, rel=1e-5)


def test_warmup_cosine_needs_steps_per_epoch():
    c = config(lr_schedule="warmup_cosine")
    with pytest.raises(ValueError, match="steps_per_epoch"):
        opt.build_optimizer(c)
    with pytest.raises(ValueError, match="steps_per_epoch"):
        opt.learning_rate_schedule(c, steps_per_epoch=0)
    assert opt.build_optimizer(config(), steps_per_epoch=None) is not None


# ---- serialisation -----------------------------------------------------------------

def test_schedule_round_trip():
    schedule = opt.WarmupCosineDecay(0.4, 100, 10, 0.1, 0.01)
    again = opt.WarmupCosineDecay.from_config(schedule.get_config())
    assert again.get_config() == schedule.get_config()
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, opt.WarmupCosineDecay)
    assert float(restored(42)) == pytest.approx(float(schedule(42)))


@pytest.mark.parametrize("cls", [opt.LARS, opt.LARC, opt.AdamW, opt.Lamb])
def test_optimizer_round_trip(cls):
    optimizer = cls(opt.WarmupCosineDecay(0.4, 100, 10), weight_decay=0.01)
    again = cls.from_config(optimizer.get_config())
    assert again.get_config() == optimizer.get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(restored) is cls
    assert restored.get_config() == optimizer.get_config()
    for a, b in zip(run(restored), run(cls.from_config(optimizer.get_config()))):
        np.testing.assert_allclose(a, b)
