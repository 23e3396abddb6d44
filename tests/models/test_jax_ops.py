"""The backend-agnostic maths under JAX, with TensorFlow not importable, against the
NumPy references of the TensorFlow tests (one JAX subprocess for every check).

Covers models/losses.py, contrastive_losses.py, predictors.py (incl. the rule
table), metrics.py, optimizers.py (each optimizer and the schedule), ema_tau, the
encoder/heads forward shapes and dtypes, and that ``import models`` works without
TensorFlow.
"""

import math

import numpy as np
import pytest

from tests.models import test_contrastive_losses as ref
from tests.models import test_optimizers as ref_opt
from tests.models.jax_subprocess import jax_available, run_jax_worker

pytestmark = pytest.mark.skipif(not jax_available(), reason="jax not installed "
                                "(pip install -e .[jax])")

WORKER = r'''
import json, sys
import keras
import numpy as np
from keras import ops
assert keras.backend.backend() == "jax", keras.backend.backend()
import models  # the whole package imports without TensorFlow
from config import Config, get_config
from models import contrastive_losses as cl, losses, metrics, predictors, optimizers
from models.base import ema_tau
assert "tensorflow" not in sys.modules
I = INPUTS
out = {}
a = lambda x: np.asarray(x)
out["symmetric"] = a(losses.symmetric_loss(I["p1"], I["z2"], I["p2"], I["z1"]))
out["negcos"] = a(losses.negative_cosine(I["p1"], I["z2"]))
import jax
grad = jax.grad(lambda p, z: ops.mean(losses.negative_cosine(p, z)), argnums=(0, 1))(
    I["p1"], I["z2"])
out["negcos_grad_p"], out["negcos_grad_z"] = a(grad[0]), a(grad[1])
out["bf16_loss_dtype"] = np.array(str(losses.symmetric_loss(
    *[ops.cast(I[k], "bfloat16") for k in ("p1", "z2", "p2", "z1")]).dtype))
for t in (0.1, 0.5):
    out[f"nt_xent_{t}"] = a(cl.nt_xent(I["c1"], I["c2"], temperature=t))
    out[f"supcon_{t}"] = a(cl.supcon(I["c1"], I["c2"], I["labels"], temperature=t))
    out[f"info_nce_{t}"] = a(cl.info_nce(I["c1"], I["c2"], I["queue"], temperature=t))
out["moco_sym"] = a(cl.moco_symmetric_loss(I["c1"], I["c2"], I["c1"], I["c2"], I["queue"],
                                           0.2))
out["sinkhorn"] = a(cl.sinkhorn(I["s1"], 0.05, 3))
out["swav"] = a(cl.swav_loss(I["s1"], I["s2"], 0.1, 0.05, 3))
out["swav_queue"] = a(cl.swav_loss(I["s1"], I["s2"], 0.1, 0.05, 3,
                                   queue_scores1=I["qs1"], queue_scores2=I["qs2"]))
out["barlow"] = a(cl.barlow_twins(I["c1"], I["c2"], lambd=5e-3))
# predictors
corr = I["corr"]
out["dp"] = a(predictors.direct_pred_weights(corr, eps=0.1))
out["dp_power1"] = a(predictors.direct_pred_weights(corr, eps=0.1, power=1.0))
out["dc"] = a(predictors.direct_copy_weights(corr, eps=0.3))
dp_rule = predictors.predictor_rule(get_config("direct_pred"))
dc_rule = predictors.predictor_rule(get_config("direct_copy"))
out["dp_rule"], out["dc_rule"] = a(dp_rule(corr)), a(dc_rule(corr))
out["sym"] = a(predictors.symmetrize(I["w"]))
k1, k2 = predictors.symmetrize_two_layer(I["k1"], I["k2"])
out["sym2_k1"], out["sym2_k2"] = a(k1), a(k2)
c0, m0 = predictors.accumulate_correlation(I["f0"], I["z"], 0.3, False, center=True,
                                           mean=I["m0"])
c1, m1 = predictors.accumulate_correlation(I["f0"], I["z"], 0.3, True, center=True,
                                           mean=I["m0"])
out["acc_init"], out["acc"], out["mean_init"], out["mean"] = a(c0), a(c1), a(m0), a(m1)
out["centered"] = a(predictors.centered_correlation(I["f0"], I["m0"]))
out["zstd"] = a(metrics.normalized_std(I["c1"]))
out["tau_const"] = a(ema_tau(0.99, 5, 10))
out["tau_cos"] = np.array([float(ema_tau(0.9, k, 10, "cosine")) for k in (0, 3, 5, 10, 20)])
# optimizers: the TF tests' fixed variables and gradients
for kind in ("sgd", "lars", "larc", "adamw", "lamb"):
    c = Config().replace(optimizer=kind, learning_rate=0.1, momentum=0.9, weight_decay=0.05)
    opt = optimizers.build_optimizer(c)
    kernel = keras.Variable(I["kernel0"], name="kernel")
    bias = keras.Variable(I["bias0"], name="bias")
    for i in range(3):
        opt.apply([I[f"gk{i}"], I[f"gb{i}"]], [kernel, bias])
    out[f"opt_{kind}_kernel"], out[f"opt_{kind}_bias"] = a(kernel), a(bias)
schedule = optimizers.WarmupCosineDecay(0.4, total_steps=100, warmup_steps=10, warmup_lr=0.1,
                                        final_lr=0.01)
out["schedule"] = np.array([float(schedule(k)) for k in (0, 3, 9, 10, 37, 55, 99, 150)])
# encoders and heads: shapes and the mixed-precision dtype
from models import backbones, heads
cfg = get_config("direct_pred").replace(width=0.0625, image_size=8, projection_dim=8,
                                        projector_hidden_dim=16, mixed_precision="bfloat16")
enc = backbones.build_encoder(cfg, dtype="mixed_bfloat16")
feats = enc(np.zeros((2, 8, 8, 3), "float32"), training=True)
out["feat_shape"] = np.array(feats.shape)
out["feat_dtype"] = np.array(str(feats.dtype))
proj = heads.projector(int(feats.shape[-1]), hidden_dim=16, output_dim=8)
out["proj_shape"] = np.array(proj(feats).shape)
assert "tensorflow" not in sys.modules
save(**out)
'''


@pytest.fixture(scope="module")
def jax_out(tmp_path_factory):
    rng = np.random.default_rng(7)
    r = lambda *s: rng.normal(size=s).astype("float32")  # noqa: E731
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    # No eigenvalue at 0: sqrt(s / s_max) amplifies float32 eigh errors there
    # (|ds| ~ 5e-7 gives ~3e-4 in Wp), on either backend.
    s = np.array([4.0, 1.0, 0.25, 0.04, -0.5, 1e-2])
    inputs = dict(p1=r(5, 7), z2=r(5, 7), p2=r(5, 7), z1=r(5, 7), c1=r(6, 5), c2=r(6, 5),
                  labels=np.array([0, 1, 0, 2, 1, 0]), queue=r(9, 5), s1=r(6, 4), s2=r(6, 4),
                  qs1=r(5, 4), qs2=r(5, 4), corr=((q * s) @ q.T).astype("float32"),
                  w=r(4, 4), k1=r(4, 3), k2=r(3, 4), f0=r(5, 5), m0=r(5), z=r(8, 5),
                  kernel0=ref_opt.KERNEL0.astype("float32"),
                  bias0=ref_opt.BIAS0.astype("float32"))
    for i, (gk, gb) in enumerate(ref_opt.GRADS):
        inputs[f"gk{i}"], inputs[f"gb{i}"] = gk.astype("float32"), gb.astype("float32")
    out = run_jax_worker(WORKER, tmp_path_factory.mktemp("jax_ops"), inputs)
    return inputs, out


def np_loss(p, z):
    p = p / np.linalg.norm(p, axis=1, keepdims=True)
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    return np.mean(2 - 2 * np.sum(p * z, axis=1))


def test_noncontrastive_loss_and_gradient(jax_out):
    i, o = jax_out
    np.testing.assert_allclose(o["symmetric"], np_loss(i["p1"], i["z2"]) + np_loss(i["p2"], i["z1"]),
                               rtol=1e-5)
    pn, zn = i["p1"].astype(np.float64), i["z2"].astype(np.float64)
    norm = np.linalg.norm(pn, axis=1, keepdims=True)
    ph, zh = pn / norm, zn / np.linalg.norm(zn, axis=1, keepdims=True)
    cos = np.sum(ph * zh, axis=1, keepdims=True)
    np.testing.assert_allclose(o["negcos"], 2 - 2 * cos[:, 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["negcos_grad_p"], -2.0 / norm * (zh - cos * ph) / len(pn),
                               rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(o["negcos_grad_z"], 0.0)  # stop-gradient on the target
    assert str(o["bf16_loss_dtype"]) == "float32"


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_contrastive_losses(jax_out, t):
    i, o = jax_out
    np.testing.assert_allclose(o[f"nt_xent_{t}"], ref.np_nt_xent(i["c1"], i["c2"], t), rtol=1e-5)
    np.testing.assert_allclose(o[f"supcon_{t}"], ref.np_supcon(i["c1"], i["c2"], i["labels"], t),
                               rtol=1e-5)
    np.testing.assert_allclose(o[f"info_nce_{t}"], ref.np_info_nce(i["c1"], i["c2"], i["queue"], t),
                               rtol=1e-5)


def test_moco_swav_barlow(jax_out):
    i, o = jax_out
    np.testing.assert_allclose(o["moco_sym"], ref.np_info_nce(i["c1"], i["c2"], i["queue"], 0.2)
                               + ref.np_info_nce(i["c2"], i["c1"], i["queue"], 0.2), rtol=1e-5)
    np.testing.assert_allclose(o["sinkhorn"], ref.np_sinkhorn(i["s1"], 0.05, 3), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(o["swav"], ref.np_swav(i["s1"], i["s2"], 0.1, 0.05, 3), rtol=1e-5)
    np.testing.assert_allclose(o["swav_queue"], ref.np_swav(i["s1"], i["s2"], 0.1, 0.05, 3,
                                                            i["qs1"], i["qs2"]), rtol=1e-5)
    np.testing.assert_allclose(o["barlow"], ref.np_barlow(i["c1"], i["c2"], 5e-3), rtol=1e-4)


def test_predictor_rules(jax_out):
    i, o = jax_out
    corr = i["corr"].astype(np.float64)
    s, u = np.linalg.eigh(0.5 * (corr + corr.T))

    def dp(eps, power):
        p = np.maximum((np.maximum(s, 0) / s.max()) ** power + eps, 1e-4)
        return (u * p) @ u.T

    np.testing.assert_allclose(o["dp"], dp(0.1, 0.5), atol=2e-5)
    np.testing.assert_allclose(o["dp_power1"], dp(0.1, 1.0), atol=2e-5)
    dc = corr / np.linalg.eigvalsh(corr).max() + 0.3 * np.eye(6)
    np.testing.assert_allclose(o["dc"], dc, atol=1e-6)
    # The rule table binds each factory's eps (direct_pred 0.1, direct_copy 0.3).
    np.testing.assert_allclose(o["dp_rule"], dp(0.1, 0.5), atol=2e-5)
    np.testing.assert_allclose(o["dc_rule"], dc, atol=1e-6)
    np.testing.assert_allclose(o["sym"], 0.5 * (i["w"] + i["w"].T), atol=1e-7)
    new_k1 = 0.5 * (i["k1"] + i["k2"].T)
    np.testing.assert_allclose(o["sym2_k1"], new_k1, atol=1e-7)
    np.testing.assert_allclose(o["sym2_k2"], new_k1.T, atol=1e-7)


def test_correlation_accumulator(jax_out):
    i, o = jax_out
    z = i["z"].astype(np.float64)
    batch = z.T @ z / len(z)
    np.testing.assert_allclose(o["acc_init"], batch, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["acc"], 0.3 * i["f0"] + 0.7 * batch, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["mean_init"], z.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["mean"], 0.3 * i["m0"] + 0.7 * z.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(o["centered"], i["f0"] - np.outer(i["m0"], i["m0"]), atol=1e-6)


def test_collapse_monitor_and_ema_tau(jax_out):
    i, o = jax_out
    zn = i["c1"] / np.linalg.norm(i["c1"], axis=1, keepdims=True)
    np.testing.assert_allclose(o["zstd"], np.mean(np.std(zn, axis=0)), rtol=1e-5)
    np.testing.assert_allclose(o["tau_const"], 0.99, rtol=1e-7)
    expected = [1 - 0.1 * (math.cos(math.pi * min(k / 10, 1)) + 1) / 2 for k in (0, 3, 5, 10, 20)]
    np.testing.assert_allclose(o["tau_cos"], expected, rtol=1e-6)


@pytest.mark.parametrize("kind", ["sgd", "lars", "larc", "adamw", "lamb"])
def test_optimizers_match_numpy(jax_out, kind):
    _, o = jax_out
    grads = ref_opt.GRADS
    np.testing.assert_allclose(
        o[f"opt_{kind}_kernel"], ref_opt.reference(kind, ref_opt.KERNEL0, [g for g, _ in grads],
                                                   adapt=True), rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(
        o[f"opt_{kind}_bias"], ref_opt.reference(kind, ref_opt.BIAS0, [g for _, g in grads],
                                                 adapt=False), rtol=2e-5, atol=1e-6)


def test_schedule(jax_out):
    _, o = jax_out
    expected = [ref_opt.expected_rate(k, 0.4, 100, 10, 0.1, 0.01)
                for k in (0, 3, 9, 10, 37, 55, 99, 150)]
    np.testing.assert_allclose(o["schedule"], expected, rtol=1e-5)


def test_encoder_and_projector_under_jax(jax_out):
    _, o = jax_out
    np.testing.assert_array_equal(o["feat_shape"], [2, 32])  # 512 * 0.0625
    assert str(o["feat_dtype"]) == "bfloat16"
    np.testing.assert_array_equal(o["proj_shape"], [2, 8])
