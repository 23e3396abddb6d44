"""The keras.ops recipe (data_processing/augment_ops.py) under TensorFlow and under JAX
(TensorFlow not importable in the JAX worker): the same images and uniforms give
the same views, the evaluation transform agrees (antialiased resize included),
and a BYOL model trains under JAX with ``augment_on="device"``, its views a
function of (seed, step counter).

Measured (2-core CPU): views agree to ~2.5e-6 (normalised units) between TF
(eager or XLA stages) and jitted JAX; ``eval_transform`` to ~1e-6 (6e-5 on the
0..255 scale) with a resize, exactly without one.
"""

import json

import numpy as np
import pytest
import tensorflow as tf

from data_processing import augment_ops as ao
from data_processing import augmentations as aug
from tests.models.jax_subprocess import jax_available, run_jax_worker

pytestmark = pytest.mark.skipif(not jax_available(), reason="jax not installed "
                                "(pip install -e .[jax])")

#: name -> (AugmentParams fields, source height and width): every stage and branch.
CASES = {
    "default": (dict(image_size=8), (8, 8)),  # crop, flip, 4 jitter ops incl. hue, gray
    "blur": (dict(image_size=8, blur_prob=0.5, blur_kernel_size=3), (12, 10)),
    "blend_only": (dict(image_size=8, jitter=(0.4, 0.4, 0.4, 0.0), grayscale_prob=0.5),
                   (16, 16)),
    "hue_only": (dict(image_size=8, jitter=(0.0, 0.0, 0.0, 0.3), jitter_prob=0.9), (10, 12)),
    "fallback_flip": (dict(image_size=8, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0),
                           flip_prob=1.0), (8, 8)),
}
#: name -> (source height and width, image_size) of eval_transform.
EVAL_CASES = {"same": ((8, 8), 8), "down": ((40, 48), 32), "odd": ((12, 10), 8),
              "up": ((6, 7), 8)}
VIEWS_TOL = 1e-5
EVAL_TOL = 1e-5  # normalised units (~7e-4 on the 0..255 scale); measured ~1e-6


def _inputs():
    rng = np.random.default_rng(0)
    inputs = {}
    for name, (_, (h, w)) in CASES.items():
        inputs[f"x/{name}"] = rng.integers(0, 256, (16, h, w, 3), dtype=np.uint8)
        u = rng.uniform(size=(16, ao.NUM_UNIFORMS)).astype(np.float32)
        # Both sides of every per-image switch in one batch.
        for col in (ao.C_FLIP, ao.C_JITTER_ON, ao.C_GRAY, ao.C_BLUR_ON):
            u[0, col], u[1, col] = 0.01, 0.99
        inputs[f"u/{name}"] = u
    inputs["x/float"] = inputs["x/default"].astype(np.float32)
    for name, ((h, w), _) in EVAL_CASES.items():
        inputs[f"e/{name}"] = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    return inputs


OPS_WORKER = r'''
import json, sys
import jax
import numpy as np
from data_processing import augment_ops as ao
from data_processing import AugmentParams  # the package's lazy names, without TensorFlow
assert "tensorflow" not in sys.modules
cases, eval_cases = json.loads(str(INPUTS["cases"])), json.loads(str(INPUTS["eval_cases"]))
out = {}
for name, (fields, _) in cases.items():
    p = AugmentParams(**fields)
    fn = jax.jit(lambda x, u: ao.augment_from_uniforms(x, u, p))  # as in the train step
    out[name] = fn(INPUTS["x/" + name], INPUTS["u/" + name])
out["eager"] = ao.augment_from_uniforms(INPUTS["x/default"], INPUTS["u/default"],
                                        AugmentParams(**cases["default"][0]))  # op by op
out["float"] = ao.augment_from_uniforms(INPUTS["x/float"], INPUTS["u/default"],
                                        AugmentParams(**cases["default"][0]))
for name, (_, size) in eval_cases.items():
    out["e/" + name] = ao.eval_transform(INPUTS["e/" + name], AugmentParams(image_size=size))
save(**out)
'''


@pytest.fixture(scope="module")
def inputs():
    return _inputs()


@pytest.fixture(scope="module")
def jax_ops(inputs, tmp_path_factory):
    worker_inputs = dict(inputs, cases=np.array(json.dumps(CASES)),
                         eval_cases=np.array(json.dumps(EVAL_CASES)))
    return run_jax_worker(OPS_WORKER, tmp_path_factory.mktemp("augment_ops"), worker_inputs)


def _xla_stages(images, u, p):
    """The TensorFlow host / device path: augment_batch's XLA-compiled stages."""
    x, u = tf.constant(images), tf.constant(u)
    for stage in aug._compiled_stages(p, True):
        x = stage(x, u)
    return x.numpy()


@pytest.mark.parametrize("name", sorted(CASES))
def test_views_agree_between_tensorflow_and_jax(name, inputs, jax_ops):
    p = ao.AugmentParams(**CASES[name][0])
    x, u = inputs[f"x/{name}"], inputs[f"u/{name}"]
    tf_view = ao.augment_from_uniforms(x, u, p).numpy()
    assert tf_view.shape == (16, 8, 8, 3) and np.isfinite(tf_view).all()
    assert tf_view.reshape(16, -1).std(axis=1).min() > 0.05  # not a constant image
    np.testing.assert_allclose(jax_ops[name], tf_view, atol=VIEWS_TOL, rtol=0)
    np.testing.assert_allclose(_xla_stages(x, u, p), jax_ops[name], atol=VIEWS_TOL, rtol=0)
    # The uniforms decide the view: other uniforms, other views.
    other_u = np.random.default_rng(9).uniform(size=u.shape).astype(np.float32)
    other = ao.augment_from_uniforms(x, other_u, p).numpy()
    assert np.abs(other - tf_view).mean() > 0.1


def test_jax_eager_and_float_input_agree_with_jitted_uint8(jax_ops):
    np.testing.assert_allclose(jax_ops["eager"], jax_ops["default"], atol=VIEWS_TOL, rtol=0)
    np.testing.assert_allclose(jax_ops["float"], jax_ops["default"], atol=VIEWS_TOL, rtol=0)


@pytest.mark.parametrize("name", sorted(EVAL_CASES))
def test_eval_transform_agrees_between_tensorflow_and_jax(name, inputs, jax_ops):
    (h, w), size = EVAL_CASES[name]
    x = inputs[f"e/{name}"]
    tf_out = aug.eval_transform(x, ao.AugmentParams(image_size=size)).numpy()
    assert tf_out.shape == (3, size, size, 3)
    np.testing.assert_allclose(jax_ops["e/" + name], tf_out, atol=EVAL_TOL, rtol=0)
    if name == "same":
        np.testing.assert_array_equal(jax_ops["e/" + name], tf_out)
    else:  # a real resize: TF's own antialiased tf.image.resize, shorter side, centre crop
        new_h, new_w = ao.resize_shape(h, w, size)
        ref = tf.image.resize(x.astype(np.float32), [new_h, new_w], antialias=True).numpy()
        top, left = (new_h - size) // 2, (new_w - size) // 2
        ref = ao.normalize(ref[:, top:top + size, left:left + size] / 255.0,
                           ao.AugmentParams(image_size=size))
        np.testing.assert_allclose(jax_ops["e/" + name], ref, atol=EVAL_TOL, rtol=0)


def test_resize_shape_is_the_shorter_side():
    assert ao.resize_shape(40, 48, 32) == (32, 38)
    assert ao.resize_shape(12, 10, 8) == (10, 8)
    assert ao.resize_shape(6, 7, 8) == (8, 9)  # 7 * 8 / 6 = 9.33
    assert ao.resize_shape(8, 8, 8) == (8, 8)


MODEL_WORKER = r'''
import sys
import jax
import keras
import numpy as np
from backends import jax as jax_backend
from models import build_model, build_optimizer
from tests.models.conftest import tiny_config
assert keras.backend.backend() == "jax" and "tensorflow" not in sys.modules
images = INPUTS["images"]
config = tiny_config("byol", augment_on="device", seed=3)
model = build_model(config)
model.set_total_steps(2, steps_per_epoch=2)
model.compile(optimizer=build_optimizer(config, steps_per_epoch=2))
history = model.fit(images, batch_size=4, epochs=1, shuffle=False, verbose=0)
out = {"loss": np.array(history.history["loss"]), "steps": np.array(model.step_counter.value)}

def views_fn(model):
    """The model's own two views of images[:4] at a traced step (jitted, as in fit)."""
    def views(step):
        with keras.StatelessScope(state_mapping=[(model.step_counter, step)]):
            x1, x2, _ = model.unpack_batch(images[:4])
        return x1, x2
    return jax.jit(views)

views = views_fn(model)
fresh = views_fn(build_model(config))  # e.g. a resumed run: only (seed, step) matter
other_seed = views_fn(build_model(config.replace(seed=4)))
for name, fn, step in [("s0", views, 0), ("s0_again", views, 0), ("s0_fresh", fresh, 0),
                       ("s1", views, 1), ("seed4", other_seed, 0)]:
    x1, x2 = fn(np.int32(step))
    out[name + "/x1"], out[name + "/x2"] = x1, x2
# (images, labels) batches (SupCon): the same views, the labels passed through.
def labelled(step):
    with keras.StatelessScope(state_mapping=[(model.step_counter, step)]):
        return model.unpack_batch((images[:4], INPUTS["labels"]))
x1, x2, labels = jax.jit(labelled)(np.int32(0))
out["labelled/x1"], out["labelled/x2"], out["labelled/labels"] = x1, x2, labels
u1, u2 = jax_backend.augmentation_uniforms(3, np.int32(0), 4)
out["u1"], out["u2"] = u1, u2
out["u_high_seed"] = jax_backend.augmentation_uniforms(2**32 + 3, np.int32(0), 4)[0]
save(**out)
'''


@pytest.fixture(scope="module")
def jax_model(tmp_path_factory):
    images = np.random.default_rng(1).integers(0, 256, (8, 12, 12, 3), dtype=np.uint8)
    return run_jax_worker(MODEL_WORKER, tmp_path_factory.mktemp("augment_model"),
                          {"images": images, "labels": np.arange(4, dtype=np.int32)})


def test_jax_device_augmentation_trains_two_steps(jax_model):
    assert jax_model["loss"].shape == (1,) and np.isfinite(jax_model["loss"]).all()
    assert jax_model["loss"][0] > 0
    assert int(jax_model["steps"]) == 2


def test_jax_device_views_are_a_function_of_seed_and_step(jax_model):
    v = jax_model
    for view in ("x1", "x2"):
        assert v[f"s0/{view}"].shape == (4, 8, 8, 3)
        assert np.isfinite(v[f"s0/{view}"]).all()
        np.testing.assert_array_equal(v[f"s0/{view}"], v[f"s0_again/{view}"])
        np.testing.assert_array_equal(v[f"s0/{view}"], v[f"s0_fresh/{view}"])
        assert np.abs(v[f"s0/{view}"] - v[f"s1/{view}"]).mean() > 0.1
        assert np.abs(v[f"s0/{view}"] - v[f"seed4/{view}"]).mean() > 0.1
        np.testing.assert_array_equal(v[f"labelled/{view}"], v[f"s0/{view}"])
    np.testing.assert_array_equal(v["labelled/labels"], np.arange(4))
    assert np.abs(v["s0/x1"] - v["s0/x2"]).mean() > 0.1  # two different views
    for u in (v["u1"], v["u2"]):
        assert u.shape == (4, ao.NUM_UNIFORMS) and u.min() >= 0 and u.max() < 1
    assert not np.allclose(v["u1"], v["u2"])
    assert not np.allclose(v["u1"], v["u_high_seed"])  # all 64 bits of the seed count
