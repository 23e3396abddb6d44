"""Tests of the batched two-view augmentation against independent NumPy expectations."""

import colorsys
import functools
import itertools

import numpy as np
import pytest
import tensorflow as tf

from config import Config
from data_processing import augment_ops as ao
from data_processing import augmentations as aug
from data_processing.augment_ops import AugmentParams, eval_transform
from data_processing.augmentations import augment_batch, evaluation_dataset, pretraining_dataset
from data_processing.datasets import from_arrays

MEAN = np.array(AugmentParams().normalize_mean, np.float32)
STD = np.array(AugmentParams().normalize_std, np.float32)
GRAY = np.array([0.2989, 0.587, 0.114], np.float32)
# Every random op off, crop = whole image: the recipe is then only a normalisation.
PLAIN = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_prob=0.0, jitter_prob=0.0,
             grayscale_prob=0.0, blur_prob=0.0)


@pytest.fixture(autouse=True)
def no_xla(request, monkeypatch):
    """XLA compilation of every recipe variant would dominate the runtime: tests run
    the plain graph (the same ops; ``xla=False``) unless marked ``xla``; the
    tf.function and jitter tests check that both agree."""
    if "xla" not in request.keywords:
        monkeypatch.setitem(globals(), "augment_batch",
                            functools.partial(aug.augment_batch, xla=False))
        monkeypatch.setitem(globals(), "pretraining_dataset",
                            functools.partial(aug.pretraining_dataset, xla=False))


def params(size=16, **kw):
    return AugmentParams(image_size=size, **{**PLAIN, **kw})


def unnormalize(x):
    return np.asarray(x) * STD + MEAN


def ramp(size=16, batch=2):
    """R = column * 8, G = row * 8, B = 100 (uint8)."""
    cols, rows = np.meshgrid(np.arange(size), np.arange(size))
    img = np.stack([cols * 8, rows * 8, np.full_like(cols, 100)], -1).astype(np.uint8)
    return np.repeat(img[None], batch, 0)


def random_images(n=8, size=16, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def tiny_dataset(n=24, size=16):
    x = random_images(n, size)
    y = np.arange(n) % 3
    return from_arrays(x, y, x[:10], y[:10], ("a", "b", "c"))


# ---------------------------------------------------------------------------
# Single ops.
# ---------------------------------------------------------------------------

def test_crop_full_scale_is_identity_and_normalises():
    x = random_images(4, 16)
    out = augment_batch(x, params(16)).numpy()
    np.testing.assert_allclose(out, (x / 255.0 - MEAN) / STD, atol=1e-4)


def test_crop_full_scale_to_other_size_matches_bilinear_resize():
    x = random_images(3, 8)
    out = unnormalize(augment_batch(x, params(20)).numpy()) * 255
    ref = tf.image.resize(x.astype(np.float32), [20, 20], method="bilinear").numpy()
    np.testing.assert_allclose(out, ref, atol=1e-2)


@pytest.mark.parametrize("ratio,width,height", [(1.0, 16, 16), (4.0, 32, 8)])
def test_crop_area_and_aspect_ratio(ratio, width, height):
    # A crop of a quarter of the area with aspect w/h = ratio (torchvision: w =
    # sqrt(area * ratio)), resized back to 32 px: the R (column) and G (row) ramps
    # then cover width - 1 / height - 1 source pixels in steps of width / 32, height / 32.
    p = params(32, crop_scale=(0.25, 0.25), crop_ratio=(ratio, ratio))
    out = unnormalize(augment_batch(ramp(32, 6), p).numpy()) * 255 / 8
    for img in out:
        cols, rows = img[..., 0], img[..., 1]
        assert cols.max() - cols.min() == pytest.approx(width - 1, abs=1e-3)
        assert rows.max() - rows.min() == pytest.approx(height - 1, abs=1e-3)
        assert cols.min() == pytest.approx(round(cols.min()), abs=1e-3)  # whole-pixel offset
        np.testing.assert_allclose(np.diff(rows, axis=0)[2:-2], height / 32, atol=1e-3)
        np.testing.assert_allclose(np.diff(cols, axis=1)[:, 2:-2], width / 32, atol=1e-3)


def test_crop_falls_back_to_centre_crop_when_no_draw_fits():
    # ratio 2 at full area never fits a square image: torchvision takes the whole
    # width and height = width / 2, centred (rows 8..23 of 32).
    p = params(32, crop_scale=(1.0, 1.0), crop_ratio=(2.0, 2.0))
    out = unnormalize(augment_batch(ramp(32, 2), p).numpy()) * 255 / 8
    np.testing.assert_allclose([out[..., 1].min(), out[..., 1].max()], [8, 23], atol=1e-3)
    np.testing.assert_allclose([out[..., 0].min(), out[..., 0].max()], [0, 31], atol=1e-3)


def test_random_crops_stay_inside_image_and_vary():
    p = params(16, crop_scale=(0.08, 1.0), crop_ratio=(0.75, 4 / 3))
    out = unnormalize(augment_batch(ramp(16, 64), p, seed=tf.constant([3, 4])).numpy()) * 255
    assert out.min() >= -1e-3 and out[..., :2].max() <= 15 * 8 + 1e-3
    spans = out[..., 0].max(axis=(1, 2)) - out[..., 0].min(axis=(1, 2))
    assert spans.std() > 5  # different crop widths in one batch


def test_flip_mirrors_left_right_gradient():
    x = ramp(16, 3)
    flipped = augment_batch(x, params(16, flip_prob=1.0)).numpy()
    np.testing.assert_allclose(flipped, (x[:, :, ::-1] / 255.0 - MEAN) / STD, atol=1e-4)
    kept = augment_batch(x, params(16, flip_prob=0.0)).numpy()
    np.testing.assert_allclose(kept, (x / 255.0 - MEAN) / STD, atol=1e-4)


def test_flip_probability_half_flips_some_images():
    out = unnormalize(augment_batch(ramp(16, 200), params(16, flip_prob=0.5)).numpy())
    mirrored = out[:, 0, 0, 0] > out[:, 0, -1, 0]
    assert 0.35 < mirrored.mean() < 0.65


def test_brightness_only_factor_within_bounds():
    x = np.random.default_rng(1).integers(20, 120, (32, 8, 8, 3), dtype=np.uint8)
    p = params(8, jitter=(0.5, 0.0, 0.0, 0.0), jitter_prob=1.0)
    out = unnormalize(augment_batch(x, p).numpy())
    ratio = out / (x / 255.0)  # no clipping: inputs <= 120 / 255, factor <= 1.5
    per_image = ratio.reshape(32, -1)
    np.testing.assert_allclose(per_image, np.broadcast_to(per_image[:, :1], per_image.shape),
                               rtol=1e-3)  # one factor per image
    assert per_image.min() >= 0.5 - 1e-3 and per_image.max() <= 1.5 + 1e-3
    assert per_image[:, 0].std() > 0.15  # ~U(0.5, 1.5): std 0.29


def test_grayscale_prob_one_gives_equal_channels():
    x = random_images(6, 8)
    out = unnormalize(augment_batch(x, params(8, grayscale_prob=1.0)).numpy())
    np.testing.assert_allclose(out[..., 0], out[..., 1], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], out[..., 2], atol=1e-5)
    np.testing.assert_allclose(out[..., 0], (x / 255.0) @ GRAY, atol=1e-4)


def np_gaussian_blur(img, sigma, k):
    """torchvision gaussian_blur: separable kernel, reflect padding (NumPy)."""
    t = np.linspace(-(k - 1) / 2, (k - 1) / 2, k)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    w /= w.sum()
    pad = k // 2
    x = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
    x = sum(w[i] * x[i:i + img.shape[0]] for i in range(k))
    return sum(w[i] * x[:, i:i + img.shape[1]] for i in range(k))


def test_blur_matches_numpy_and_lowers_checkerboard_variance():
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    x = np.repeat(np.stack([board] * 3, -1)[None], 2, 0)
    p = params(16, blur_prob=1.0, blur_kernel_size=5, blur_sigma=(1.0, 1.0))
    out = unnormalize(augment_batch(x, p).numpy())
    np.testing.assert_allclose(out[0], np_gaussian_blur(x[0] / 255.0, 1.0, 5), atol=1e-4)
    assert out.var() < 0.2 * (x / 255.0).var()
    unblurred = unnormalize(augment_batch(x, params(16, blur_prob=0.0)).numpy())
    assert unblurred.var() == pytest.approx((x / 255.0).var(), rel=1e-3)


def test_blur_sigma_drawn_per_image():
    board = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    x = np.repeat(np.stack([board] * 3, -1)[None], 16, 0)
    p = params(16, blur_prob=1.0, blur_kernel_size=9, blur_sigma=(0.3, 3.0))
    out = unnormalize(augment_batch(x, p).numpy())
    variances = out.reshape(16, -1).var(axis=1)
    assert variances.max() > 3 * variances.min()


# ---------------------------------------------------------------------------
# Colour jitter against a NumPy torchvision-semantics reference.
# ---------------------------------------------------------------------------

def np_hue(img, delta):
    out = np.empty_like(img)
    for idx in np.ndindex(img.shape[:-1]):
        h, s, v = colorsys.rgb_to_hsv(*img[idx])
        out[idx] = colorsys.hsv_to_rgb((h + delta) % 1.0, s, v)
    return out


def np_color_jitter(img, factors, order):
    """torchvision ColorJitter on a float image in [0, 1] with given factors and op order."""
    b, c, s, h = factors
    for op in order:
        gray = (img @ GRAY)[..., None]
        if op == 0:
            img = np.clip(b * img, 0, 1)
        elif op == 1:
            img = np.clip(c * img + (1 - c) * gray.mean(), 0, 1)
        elif op == 2:
            img = np.clip(s * img + (1 - s) * gray, 0, 1)
        else:
            img = np_hue(img, h)
    return img


def test_color_jitter_all_24_orders_match_numpy_reference():
    jitter = (0.4, 0.4, 0.4, 0.1)
    p = AugmentParams(image_size=4, jitter=jitter, jitter_prob=0.8)
    orders = list(itertools.permutations(range(4)))
    rng = np.random.default_rng(0)
    n = len(orders)
    x = rng.uniform(0, 1, (n, 4, 4, 3)).astype(np.float32)
    u = rng.uniform(0, 1, (n, ao.NUM_UNIFORMS)).astype(np.float32)
    u[:, ao.C_JITTER_ON] = 0.1  # applied
    u[-1, ao.C_JITTER_ON] = 0.9  # not applied: identity
    expected = []
    for i, order in enumerate(orders):
        keys = np.empty(4)
        keys[list(order)] = (np.arange(4) + 0.5) / 4  # op order[k] gets the k-th smallest key
        u[i, ao.C_ORDER:ao.C_ORDER + 4] = keys
        f = u[i, ao.C_FACTORS:ao.C_FACTORS + 4]
        factors = [1 - v + 2 * v * fi for v, fi in zip(jitter[:3], f[:3])] + [
            -jitter[3] + 2 * jitter[3] * f[3]]
        expected.append(np_color_jitter(x[i], factors, order) if i < n - 1 else x[i])
    for xla in (True, False):
        fn = tf.function(lambda x, u: ao.color_jitter(x, u, p), jit_compile=xla)
        out = fn(tf.constant(x), tf.constant(u)).numpy()
        np.testing.assert_allclose(out, np.stack(expected), atol=2e-4)


def test_jitter_order_is_random_per_image():
    # Brightness then contrast differs from contrast then brightness once clipping
    # kicks in; check that both orders occur by comparing against the two NumPy orders.
    x = np.random.default_rng(2).uniform(0.3, 1.0, (64, 4, 4, 3)).astype(np.float32)
    p = AugmentParams(image_size=4, jitter=(0.8, 0.8, 0.0, 0.0), jitter_prob=1.0)
    u = np.random.default_rng(3).uniform(0, 1, (64, ao.NUM_UNIFORMS)).astype(np.float32)
    out = ao.color_jitter(tf.constant(x), tf.constant(u), p).numpy()
    which = []
    for i in range(64):
        f = 0.2 + 1.6 * u[i, ao.C_FACTORS:ao.C_FACTORS + 2]
        bc = np_color_jitter(x[i], [f[0], f[1], 1, 0], [0, 1])
        cb = np_color_jitter(x[i], [f[0], f[1], 1, 0], [1, 0])
        err_bc, err_cb = np.abs(out[i] - bc).max(), np.abs(out[i] - cb).max()
        assert min(err_bc, err_cb) < 1e-4
        if abs(err_bc - err_cb) > 1e-3:
            which.append(err_bc < err_cb)
    assert 0.2 < np.mean(which) < 0.8


def test_hue_shift_matches_colorsys():
    x = np.random.default_rng(4).uniform(0, 1, (3, 5, 5, 3)).astype(np.float32)
    x[0, 0, 0] = [0.5, 0.5, 0.5]  # gray pixel: unchanged
    deltas = np.array([0.1, -0.3, 0.45], np.float32)
    out = ao.hue_shift(tf.constant(x), tf.constant(deltas)).numpy()
    expected = np.stack([np_hue(x[i], deltas[i]) for i in range(3)])
    np.testing.assert_allclose(out, expected, atol=1e-5)


# ---------------------------------------------------------------------------
# Randomness, seeds, tracing.
# ---------------------------------------------------------------------------

def test_identical_images_in_a_batch_get_different_views():
    x = np.repeat(random_images(1, 16), 8, 0)
    out = augment_batch(x, AugmentParams(image_size=16)).numpy()
    for i, j in itertools.combinations(range(8), 2):
        assert not np.allclose(out[i], out[j])


def test_seeded_determinism():
    x = random_images(8, 16)
    p = AugmentParams(image_size=16, blur_prob=0.5)
    a = augment_batch(x, p, seed=tf.constant([1, 2], tf.int32)).numpy()
    b = augment_batch(x, p, seed=tf.constant([1, 2], tf.int64)).numpy()
    c = augment_batch(x, p, seed=tf.constant([1, 3], tf.int32)).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 0.1


@pytest.mark.xla
def test_stateful_calls_differ_and_work_inside_tf_function():
    x = tf.constant(random_images(8, 16))
    p = AugmentParams(image_size=12)

    @tf.function
    def step(images, seed=None):
        return augment_batch(images, p, seed)

    a, b = step(x).numpy(), step(x).numpy()
    assert a.shape == (8, 12, 12, 3) and a.dtype == np.float32
    assert np.abs(a - b).mean() > 0.1
    s = tf.constant([5, 6], tf.int64)
    np.testing.assert_array_equal(step(x, s).numpy(), step(x, s).numpy())
    # XLA-staged and plain graphs compute the same function.
    plain = ao.augment_from_uniforms(x, aug._uniforms(8, s), p).numpy()
    np.testing.assert_allclose(step(x, s).numpy(), plain, atol=1e-4)


def test_float_input_on_0_255_scale_matches_uint8():
    x = random_images(4, 16)
    p = AugmentParams(image_size=16)
    s = tf.constant([7, 7])
    np.testing.assert_allclose(augment_batch(x.astype(np.float32), p, s).numpy(),
                               augment_batch(x, p, s).numpy(), atol=1e-4)


# ---------------------------------------------------------------------------
# Evaluation transform and pipelines.
# ---------------------------------------------------------------------------

def test_eval_transform_normalisation_matches_numpy():
    x = random_images(5, 8)
    p = AugmentParams(image_size=8, normalize_mean=(0.1, 0.2, 0.3), normalize_std=(0.5, 0.25, 2.0))
    out = eval_transform(x, p).numpy()
    expected = (x / 255.0 - np.array([0.1, 0.2, 0.3])) / np.array([0.5, 0.25, 2.0])
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, atol=1e-5)
    np.testing.assert_array_equal(eval_transform(x, p).numpy(), out)  # no randomness


def test_eval_transform_resizes_and_centre_crops():
    x = np.zeros((2, 8, 16, 3), np.uint8)
    x[:, :, 2:14] = 255  # the centre is white, beyond the antialiasing footprint
    out = unnormalize(eval_transform(x, AugmentParams(image_size=4)).numpy())
    assert out.shape == (2, 4, 4, 3)
    np.testing.assert_allclose(out, 1.0, atol=1e-4)


@pytest.mark.xla
def test_host_pipeline_two_views_shapes_ranges_and_epoch():
    data = tiny_dataset(24, 16)
    config = Config(batch_size=8, image_size=12, seed=1)
    ds = pretraining_dataset(data, config)
    batches = list(ds)
    assert len(batches) == 3  # one epoch, drop_remainder
    lo, hi = (0 - MEAN) / STD, (1 - MEAN) / STD
    for v1, v2 in batches:
        for v in (v1, v2):
            assert v.shape == (8, 12, 12, 3) and v.dtype == tf.float32
            assert np.all(v.numpy() >= lo - 1e-4) and np.all(v.numpy() <= hi + 1e-4)
        assert np.abs(v1.numpy() - v2.numpy()).mean() > 0.1
    # a function of (seed, epoch, step): the same epoch again gives the same batches
    # (also iterating the same dataset twice), another epoch or seed differs
    again = [v1.numpy() for v1, _ in pretraining_dataset(data, config)]
    np.testing.assert_array_equal(again[0], batches[0][0].numpy())
    np.testing.assert_array_equal([v1.numpy() for v1, _ in ds][2], batches[2][0].numpy())
    epoch1 = [v1.numpy() for v1, _ in pretraining_dataset(data, config, epoch=1)]
    assert not np.allclose(epoch1[0], batches[0][0].numpy())
    other = [v1.numpy() for v1, _ in pretraining_dataset(data, config.replace(seed=2))]
    assert not np.allclose(other[0], batches[0][0].numpy())
    # epochs 1..2 back to back are epoch 1 then epoch 2 (what a resumed run sees)
    both = [v1.numpy() for v1, _ in pretraining_dataset(data, config, epoch=1, stop_epoch=3)]
    epoch2 = [v1.numpy() for v1, _ in pretraining_dataset(data, config, epoch=2)]
    assert len(both) == 6
    np.testing.assert_array_equal(np.stack(both), np.stack(epoch1 + epoch2))


def test_device_pipeline_yields_raw_uint8_batches():
    data = tiny_dataset(20, 16)
    config = Config(batch_size=6, augment_on="device", seed=0)
    batches = [b.numpy() for b in pretraining_dataset(data, config)]
    assert len(batches) == 3
    assert batches[0].dtype == np.uint8 and batches[0].shape == (6, 16, 16, 3)
    seen = np.concatenate(batches)
    source = np.stack(list(data.pretrain.as_numpy_iterator()))
    original = {img.tobytes() for img in source}
    assert all(img.tobytes() in original for img in seen)
    assert len({img.tobytes() for img in seen}) == 18  # no duplicates
    unshuffled = [b.numpy() for b in pretraining_dataset(data, config, shuffle=False)]
    np.testing.assert_array_equal(np.concatenate(unshuffled), source[:18])
    assert not np.array_equal(seen, source[:18])


def test_host_and_device_augmentation_have_the_same_distribution():
    tf.random.set_seed(0)
    x = random_images(128, 16, seed=5)
    data = from_arrays(x, np.zeros(128), x[:4], np.zeros(4), ("a",))
    config = Config(batch_size=64, image_size=16, blur_prob=0.5, seed=3)
    p = AugmentParams.from_config(config)
    epochs = 8
    host = [v.numpy() for pair in pretraining_dataset(data, config, stop_epoch=epochs)
            for v in pair]
    raw = list(pretraining_dataset(data, config.replace(augment_on="device"), stop_epoch=epochs))
    device = [augment_batch(b, p).numpy() for b in raw for _ in range(2)]
    # the same recipe without crops: a clearly different distribution
    other = [augment_batch(b, AugmentParams(image_size=16, crop_scale=(1, 1))).numpy()
             for b in raw]

    def stats(v):  # per-channel mean and std, mean per-image std (normalised units)
        v = np.concatenate(v)
        return np.concatenate([v.mean(axis=(0, 1, 2)), v.std(axis=(0, 1, 2)),
                               [v.reshape(len(v), -1).std(axis=1).mean()]])

    assert len(host) == len(device) == 2 * 2 * epochs
    np.testing.assert_allclose(stats(host), stats(device), atol=0.03)
    assert np.abs(stats(other) - stats(device)).max() > 0.1


def test_fewer_examples_than_one_batch_raises():
    data = tiny_dataset(10, 8)
    with pytest.raises(ValueError, match=r"\(10\).*batch_size=16"):
        pretraining_dataset(data, Config(batch_size=16))


def test_evaluation_dataset_in_order_and_keeps_last_batch():
    data = tiny_dataset(10, 8)
    config = Config(image_size=8, batch_size=4)
    batches = list(evaluation_dataset(data.train, config))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    images = np.concatenate([x.numpy() for x, _ in batches])
    labels = np.concatenate([y.numpy() for _, y in batches])
    source = np.stack([x for x, _ in data.train.as_numpy_iterator()])
    np.testing.assert_allclose(images, (source / 255.0 - MEAN) / STD, atol=1e-5)
    np.testing.assert_array_equal(labels, np.arange(10) % 3)
    assert [len(y) for _, y in evaluation_dataset(data.train, config, batch_size=5)] == [5, 5]


def test_augment_params_from_config_and_validation():
    config = Config(image_size=24, jitter=(0.1, 0.2, 0.3, 0.05), blur_prob=0.3)
    p = AugmentParams.from_config(config)
    assert p.image_size == 24 and p.jitter == (0.1, 0.2, 0.3, 0.05) and p.blur_prob == 0.3
    with pytest.raises(ValueError, match="flip_prob"):
        AugmentParams(flip_prob=1.5)
    with pytest.raises(ValueError, match="blur_kernel_size"):
        AugmentParams(blur_kernel_size=4)
