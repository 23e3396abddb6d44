"""Batched two-view augmentation for non-contrastive SSL (BYOL / SimSiam / DirectPred).

The recipe is the SimCLR / BYOL augmentation (Chen et al. 2020, App. A; Grill et
al. 2020, App. B) with the CIFAR settings of the official DirectPred code
(facebookresearch/luckmatters ``ssl/real-dataset/data/transforms.py``), i.e. the
torchvision pipeline::

    RandomResizedCrop(size, scale, ratio) -> RandomHorizontalFlip(flip_prob)
    -> RandomApply([ColorJitter(b, c, s, h)], jitter_prob) -> RandomGrayscale(p)
    -> RandomApply([GaussianBlur(kernel, sigma)], blur_prob) -> ToTensor -> Normalize

Every random parameter is drawn per image inside the graph (one [B, N] uniform
draw per view, stateful or stateless), but whole batches go through vectorised
ops: the crop (+ flip) is a per-image bilinear gather, the four jitter ops run in
a per-image random order, the blur is a per-image separable matrix product. The
deterministic part runs as a few XLA-compiled stages (fused elementwise loops),
which makes the host pipeline several times faster than a per-image
``Dataset.map`` (see ``benchmarks/input_pipeline.py``).

Deviations from torchvision-on-PIL: float arithmetic throughout (PIL rounds to
uint8 after every op), and the crop is resized bilinearly without antialiasing
(only matters for crops larger than the output, i.e. never for CIFAR at 32 px).

Image inputs are uint8, or float on the same 0..255 scale (e.g. a cast uint8
batch); outputs are float32 ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Optional, Tuple

import tensorflow as tf

from config import Config

#: Luma weights of torchvision ``rgb_to_grayscale`` (ITU-R 601-2).
_GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: RandomResizedCrop tries this many (area, ratio) draws before the centre-crop fallback.
_CROP_ATTEMPTS = 10

# Column layout of the per-image uniform draws of one view.
_C_AREA = 0
_C_RATIO = _C_AREA + _CROP_ATTEMPTS
_C_TOP = _C_RATIO + _CROP_ATTEMPTS
_C_LEFT = _C_TOP + 1
_C_FLIP = _C_LEFT + 1
_C_JITTER_ON = _C_FLIP + 1
_C_FACTORS = _C_JITTER_ON + 1      # brightness, contrast, saturation, hue
_C_ORDER = _C_FACTORS + 4          # 4 keys whose ranks give the op order
_C_GRAY = _C_ORDER + 4
_C_BLUR_ON = _C_GRAY + 1
_C_SIGMA = _C_BLUR_ON + 1
_NUM_UNIFORMS = _C_SIGMA + 1


#: Defaults come from Config, so the two never drift apart.
_DEFAULTS = Config()


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """The augmentation fields of :class:`config.Config` (same names, meaning, defaults)."""

    image_size: int = _DEFAULTS.image_size
    crop_scale: Tuple[float, float] = _DEFAULTS.crop_scale
    crop_ratio: Tuple[float, float] = _DEFAULTS.crop_ratio
    flip_prob: float = _DEFAULTS.flip_prob
    jitter: Tuple[float, float, float, float] = _DEFAULTS.jitter
    jitter_prob: float = _DEFAULTS.jitter_prob
    grayscale_prob: float = _DEFAULTS.grayscale_prob
    blur_prob: float = _DEFAULTS.blur_prob
    blur_kernel_size: int = _DEFAULTS.blur_kernel_size
    blur_sigma: Tuple[float, float] = _DEFAULTS.blur_sigma
    normalize_mean: Tuple[float, float, float] = _DEFAULTS.normalize_mean
    normalize_std: Tuple[float, float, float] = _DEFAULTS.normalize_std

    def __post_init__(self):
        # Tuples keep the dataclass hashable (it keys the compiled-function cache).
        for name in ("crop_scale", "crop_ratio", "jitter", "blur_sigma",
                     "normalize_mean", "normalize_std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        def increasing_pair(v):
            return len(v) == 2 and 0 < v[0] <= v[1]

        checks = [
            ("crop_scale", increasing_pair(self.crop_scale)),
            ("crop_ratio", increasing_pair(self.crop_ratio)),
            ("jitter", len(self.jitter) == 4 and min(self.jitter) >= 0 and self.jitter[3] <= 0.5),
            ("blur_sigma", increasing_pair(self.blur_sigma)),
            ("normalize_mean", len(self.normalize_mean) == 3),
            ("normalize_std", len(self.normalize_std) == 3 and min(self.normalize_std) > 0),
            ("image_size", self.image_size >= 1),
            ("blur_kernel_size", self.blur_kernel_size >= 1 and self.blur_kernel_size % 2 == 1),
        ]
        for name in ("flip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
            checks.append((name, 0.0 <= getattr(self, name) <= 1.0))
        for name, ok in checks:
            if not ok:
                raise ValueError(f"Invalid augmentation parameter {name}={getattr(self, name)!r}.")

    @classmethod
    def from_config(cls, config) -> "AugmentParams":
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


# ---------------------------------------------------------------------------
# Random numbers: one [B, N] uniform draw per view.
# ---------------------------------------------------------------------------

def _uniforms(batch, seed):
    shape = tf.stack([batch, _NUM_UNIFORMS])
    if seed is None:
        return tf.random.uniform(shape, dtype=tf.float32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


# ---------------------------------------------------------------------------
# Deterministic building blocks (all batched; u are the per-image uniforms).
# ---------------------------------------------------------------------------

def _crop_boxes(u, height, width, params):
    """torchvision ``RandomResizedCrop.get_params`` per image: (top, left, h, w) floats."""
    area = height * width
    lo, hi = params.crop_scale
    target = area * (lo + (hi - lo) * u[:, _C_AREA:_C_AREA + _CROP_ATTEMPTS])
    log_lo, log_hi = math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1])
    aspect = tf.exp(log_lo + (log_hi - log_lo) * u[:, _C_RATIO:_C_RATIO + _CROP_ATTEMPTS])
    w = tf.round(tf.sqrt(target * aspect))
    h = tf.round(tf.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = tf.argmax(tf.cast(fits, tf.int32), axis=1, output_type=tf.int32)
    w = tf.gather(w, first, axis=1, batch_dims=1)
    h = tf.gather(h, first, axis=1, batch_dims=1)
    # Fallback of torchvision: whole image, aspect clamped to the ratio range, centred.
    in_ratio = width / height
    fb_w = tf.where(in_ratio < params.crop_ratio[0], width,
                    tf.where(in_ratio > params.crop_ratio[1],
                             tf.round(height * params.crop_ratio[1]), width))
    fb_h = tf.where(in_ratio < params.crop_ratio[0], tf.round(width / params.crop_ratio[0]),
                    height)
    found = tf.reduce_any(fits, axis=1)
    h = tf.where(found, h, fb_h)
    w = tf.where(found, w, fb_w)
    top = tf.where(found, tf.minimum(tf.floor(u[:, _C_TOP] * (height - h + 1)), height - h),
                   tf.floor((height - h) / 2))
    left = tf.where(found, tf.minimum(tf.floor(u[:, _C_LEFT] * (width - w + 1)), width - w),
                    tf.floor((width - w) / 2))
    return top, left, h, w


def _interp_indices(start, length, size, reverse=None):
    """Source indices/weights of ``size`` outputs resampling the pixels
    [start, start + length) of an axis: bilinear with half-pixel centres, clamped to
    the crop window (= torchvision crop, then resize; no antialiasing, which only
    matters when a crop is larger than the output)."""
    k = tf.range(size, dtype=tf.float32)[None, :]
    if reverse is not None:  # horizontal flip: output column k samples column size-1-k
        k = tf.where(reverse[:, None], size - 1 - k, k)
    src = start[:, None] + (k + 0.5) * (length[:, None] / size) - 0.5
    src = tf.clip_by_value(src, start[:, None], (start + length - 1)[:, None])
    i0 = tf.floor(src)
    frac = src - i0
    i0 = tf.cast(i0, tf.int32)
    i1 = tf.minimum(i0 + 1, tf.cast(start + length - 1, tf.int32)[:, None])
    return i0, i1, frac


def _crop_flip(images, u, params):
    """RandomResizedCrop to ``image_size`` + horizontal flip; float32 on the 0..1 scale."""
    shape = tf.shape(images)
    height = tf.cast(shape[1], tf.float32)
    width = tf.cast(shape[2], tf.float32)
    size = params.image_size
    top, left, h, w = _crop_boxes(u, height, width, params)
    flip = u[:, _C_FLIP] < params.flip_prob
    r0, r1, fy = _interp_indices(top, h, size)
    c0, c1, fx = _interp_indices(left, w, size, reverse=flip)
    rows0 = tf.cast(tf.gather(images, r0, axis=1, batch_dims=1), tf.float32)
    rows1 = tf.cast(tf.gather(images, r1, axis=1, batch_dims=1), tf.float32)
    fy = fy[:, :, None, None] * (1.0 / 255.0)
    rows = rows0 * (1.0 / 255.0 - fy) + rows1 * fy          # [B, S, W, 3]
    cols0 = tf.gather(rows, c0, axis=2, batch_dims=1)
    cols1 = tf.gather(rows, c1, axis=2, batch_dims=1)
    fx = fx[:, None, :, None]
    return cols0 + (cols1 - cols0) * fx                       # [B, S, S, 3]


def _gray(x):
    r, g, b = tf.unstack(x, axis=-1)
    return (_GRAY_WEIGHTS[0] * r + _GRAY_WEIGHTS[1] * g + _GRAY_WEIGHTS[2] * b)[..., None]


def _hue_shift(x, delta):
    """torchvision ``adjust_hue``: rotate the HSV hue by ``delta`` turns ([B] tensor)."""
    hsv = tf.image.rgb_to_hsv(x)
    hue = hsv[..., 0] + delta[:, None, None]
    hue = hue - tf.floor(hue)  # mod 1 (tf.math.floormod is slow under XLA on CPU)
    return tf.image.hsv_to_rgb(tf.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1))


def _jitter_phases(params):
    """The jitter phases that do something for these params (see :func:`_color_jitter`)."""
    active = [v > 0 for v in params.jitter[:3]]
    hue = params.jitter[3] > 0
    if params.jitter_prob <= 0 or not (any(active) or hue):
        return ()
    if not hue:
        return ("blend",)
    return ("pre", "hue", "post") if any(active) else ("hue",)


def _color_jitter(x, u, params, phase=None):
    """torchvision ``RandomApply([ColorJitter(b, c, s, h)], p)`` per image.

    Factors: brightness/contrast/saturation ~ U(max(0, 1 - v), 1 + v), hue ~ U(-h, h);
    the four ops run in a random order per image (``ColorJitter.get_params``).
    Brightness, contrast and saturation are blends ``clip(f x + (1 - f) T)`` with
    T = 0, the mean gray of the image, and the per-pixel gray. With the hue at
    position p, the blends at slots < p are applied (phase ``pre``), then the hue
    (``hue``), then the blends at slots > p (``post``): six cheap masked blend
    slots and a single hue rotation. ``phase=None`` runs all phases.
    """
    if phase is None:
        for ph in _jitter_phases(params):
            x = _color_jitter(x, u, params, ph)
        return x
    on = u[:, _C_JITTER_ON] < params.jitter_prob
    h = params.jitter[3]
    if phase == "hue":
        return _hue_shift(x, tf.where(on, -h + 2.0 * h * u[:, _C_FACTORS + 3], 0.0))
    factors = []
    for i, v in enumerate(params.jitter[:3]):
        lo, hi = max(0.0, 1.0 - v), 1.0 + v
        factors.append(tf.where(on, lo + (hi - lo) * u[:, _C_FACTORS + i], 1.0))
    active = [v > 0 for v in params.jitter[:3]]
    # Position (0..3) of each op: rank of its uniform key among the four.
    keys = u[:, _C_ORDER:_C_ORDER + 4]
    pos = tf.reduce_sum(tf.cast(keys[:, None, :] < keys[:, :, None], tf.int32), axis=-1)
    hue_pos = pos[:, 3]

    def blend_slot(x, slot, keep):
        """Applies the blend op at ``slot`` to the images where ``keep`` (a [B] bool)."""
        f = tf.ones_like(factors[0])
        c_mean = tf.zeros_like(f)
        c_gray = tf.zeros_like(f)
        for op in range(3):
            if not active[op]:
                continue
            sel = tf.equal(pos[:, op], slot)
            if keep is not None:
                sel = sel & keep
            f = tf.where(sel, factors[op], f)
            if op == 1:
                c_mean = tf.where(sel, 1.0, c_mean)
            elif op == 2:
                c_gray = tf.where(sel, 1.0, c_gray)
        f = f[:, None, None, None]
        target = 0.0
        if active[1] or active[2]:
            gray = _gray(x)
            if active[1]:
                mean = tf.reduce_mean(gray, axis=[1, 2, 3], keepdims=True)
                target = c_mean[:, None, None, None] * mean
            if active[2]:
                target = target + c_gray[:, None, None, None] * gray
        return tf.clip_by_value(f * x + (1.0 - f) * target, 0.0, 1.0)

    if phase == "blend":  # no hue: the blends in all four slots
        slots, keep = range(4), lambda slot: None
    elif phase == "pre":
        slots, keep = range(3), lambda slot: slot < hue_pos
    elif phase == "post":
        slots, keep = range(1, 4), lambda slot: slot > hue_pos
    else:
        raise ValueError(f"Unknown jitter phase {phase!r}")
    for slot in slots:
        x = blend_slot(x, slot, keep(slot))
    return x


def _blur_matrices(sigma, size, kernel_size):
    """[B, size, size] matrices of a 1-D Gaussian blur (reflect padding, as torchvision)."""
    half = (kernel_size - 1) / 2.0
    taps = tf.linspace(-half, half, kernel_size)
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / sigma[:, None]))
    kernel = kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)       # [B, k]
    # Source index of every (output, tap) pair with reflect padding; a static [S, k] table.
    rad = kernel_size // 2
    src = []
    for o in range(size):
        row = []
        for t in range(kernel_size):
            i = o + t - rad
            while i < 0 or i >= size:  # reflect (without repeating the edge), as F.pad "reflect"
                i = -i if i < 0 else 2 * (size - 1) - i
            row.append(i)
        src.append(row)
    onehot = tf.one_hot(tf.constant(src), size, dtype=tf.float32)        # [S, k, S]
    return tf.einsum("bk,oki->boi", kernel, onehot)


def _blur(x, u, params):
    """``RandomApply([GaussianBlur(kernel, sigma)], p)``, sigma ~ U(blur_sigma) per image."""
    if params.blur_prob <= 0:
        return x
    lo, hi = params.blur_sigma
    sigma = lo + (hi - lo) * u[:, _C_SIGMA]
    size = params.image_size
    k = params.blur_kernel_size
    if size == 1:
        k = 1  # nothing to reflect
    mats = _blur_matrices(sigma, size, k)
    on = (u[:, _C_BLUR_ON] < params.blur_prob)[:, None, None]
    mats = tf.where(on, mats, tf.eye(size, batch_shape=[1]))
    x = tf.einsum("boi,bijc->bojc", mats, x)      # vertical
    return tf.einsum("boj,bijc->bioc", mats, x)   # horizontal


def _normalize(x, params):
    mean = tf.constant(params.normalize_mean, tf.float32)
    inv_std = tf.constant([1.0 / s for s in params.normalize_std], tf.float32)
    return (x - mean) * inv_std


def _grayscale_blur_normalize(x, u, params):
    if params.grayscale_prob > 0:
        gray_on = tf.cast(u[:, _C_GRAY] < params.grayscale_prob, tf.float32)
        x = x + gray_on[:, None, None, None] * (_gray(x) - x)
    x = _blur(x, u, params)
    return _normalize(x, params)


def _stage_fns(params):
    """The recipe as a list of ``fn(x, u) -> x`` stages."""
    stages = [functools.partial(_crop_flip, params=params)]
    for phase in _jitter_phases(params):
        stages.append(functools.partial(_color_jitter, params=params, phase=phase))
    stages.append(functools.partial(_grayscale_blur_normalize, params=params))
    return stages


def _augment_from_uniforms(images, u, params):
    """The whole (deterministic given ``u``) recipe in one graph, without XLA stages."""
    x = images
    for stage in _stage_fns(params):
        x = stage(x, u)
    return x


@functools.lru_cache(maxsize=64)
def _compiled_stages(params: AugmentParams, xla: bool):
    """Each stage XLA-compiled on its own: XLA fuses the elementwise work inside a
    stage, and materialising between stages stops it from recomputing the crop /
    earlier slots inside later fusions (measured ~1.5x faster than one cluster)."""
    if not xla:
        return (functools.partial(_augment_from_uniforms, params=params),)
    return tuple(tf.function(fn, jit_compile=True, reduce_retracing=True)
                 for fn in _stage_fns(params))


def augment_batch(images, params: AugmentParams, seed=None, *, xla: bool = True
                  ) -> tf.Tensor:
    """Returns ONE augmented view of a batch: float32 [B, S, S, 3], normalised.

    ``images``: uint8 (or float on the 0..255 scale) [B, H, W, 3]. ``seed``: None
    (stateful ``tf.random``) or an int32/int64 shape-[2] tensor (stateless ops:
    the same seed gives the same output). ``xla``: run the deterministic part as
    XLA-compiled stages (False: the same ops as one plain graph). Traceable inside
    ``tf.function``.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.cast(images, tf.float32)
    if images.shape.rank != 4:
        raise ValueError(
            f"augment_batch expects [B, H, W, 3] images. Received shape {images.shape}")
    u = _uniforms(tf.shape(images)[0], seed)
    x = images
    for stage in _compiled_stages(params, bool(xla)):
        x = stage(x, u)
    return x


def _resize_center(images, size):
    """Resizes the shorter side to ``size`` (bilinear, antialiased) and centre-crops."""
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    if images.shape[1] == size and images.shape[2] == size:
        return tf.cast(images, tf.float32)
    scale = size / tf.cast(tf.minimum(h, w), tf.float32)
    new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
    new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
    x = tf.image.resize(tf.cast(images, tf.float32), tf.stack([new_h, new_w]), antialias=True)
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return x[:, top:top + size, left:left + size, :]


def eval_transform(images, params: AugmentParams) -> tf.Tensor:
    """Deterministic evaluation view: resize shorter side + centre crop to ``image_size``
    (identity when already that size), then ``(x / 255 - mean) / std``; float32."""
    images = tf.convert_to_tensor(images)
    x = _resize_center(images, params.image_size)
    x = tf.ensure_shape(x, [None, params.image_size, params.image_size, 3])
    return _normalize(x * (1.0 / 255.0), params)


# ---------------------------------------------------------------------------
# tf.data pipelines.
# ---------------------------------------------------------------------------

#: Default tf.data ``max_intra_op_parallelism`` of the host pipeline. With 1,
#: parallelism comes from concurrent batches only, which is ~25% faster on 2 cores.
DEFAULT_INTRA_OP_PARALLELISM = 1
#: Shuffle buffers are capped at this many bytes of images (a full shuffle for CIFAR).
_SHUFFLE_BYTES = 256 * 1024 * 1024
#: Seeds of epoch e: shuffle ``seed * _EPOCH_SEEDS + e``, augmentation of step s
#: ``[seed + 1, e * _STEP_SEEDS + s]`` (stateless; distinct for any real run length).
_EPOCH_SEEDS = 1_000_003
_STEP_SEEDS = 1 << 24


def _shuffle_buffer(data, num):
    spec = data.pretrain.element_spec
    per_image = 1
    for d in spec.shape:
        per_image *= int(d) if d is not None else 96
    return int(max(1, min(num, max(1024, _SHUFFLE_BYTES // max(per_image, 1)))))


def pretraining_dataset(data, config, *, shuffle: bool = True,
                        seed: Optional[int] = None,
                        with_labels: bool = False, epoch: int = 0,
                        stop_epoch: Optional[int] = None, xla: bool = True,
                        intra_op_parallelism: Optional[int] = DEFAULT_INTRA_OP_PARALLELISM
                        ) -> tf.data.Dataset:
    """The pre-training batches of epoch ``epoch`` (0-based; ``drop_remainder=True``),
    or with ``stop_epoch`` those of epochs ``epoch .. stop_epoch - 1`` back to back.

    Every batch is a function of (seed, epoch, step) only: the shuffle of epoch e
    is seeded by (seed, e) and the two views of its step s by the stateless seed
    (seed, e, s). Iterating the dataset again gives the same batches; a run
    resumed at epoch e (``epoch=e``) sees exactly the batches the uninterrupted
    run saw from e on.

    ``config.augment_on == "host"``: yields ``(view1, view2)`` float32 normalised
    pairs; both views of a batch are made by one ``augment_batch`` call on the
    batch stacked twice (map after batch). ``"device"``: yields raw uint8
    ``[B, H, W, 3]`` batches; the model calls :func:`augment_batch` twice inside
    its train step (seeded by its step counter).

    ``with_labels`` (supervised contrastive learning): the labelled ``data.train``
    split instead of ``data.pretrain``, batches ``((view1, view2), labels)`` (or
    ``(images, labels)`` for device augmentation). ``xla``: see
    :func:`augment_batch`. ``intra_op_parallelism``: tf.data
    ``max_intra_op_parallelism`` of the host pipeline (None: TensorFlow's default).
    """
    batch = int(config.batch_size)
    num = int(data.num_train if with_labels else data.num_pretrain)
    if num < batch:
        raise ValueError(
            f"The pre-training set has fewer examples ({num}) than one batch "
            f"(batch_size={batch}); lower batch_size or use more examples.")
    if config.augment_on not in ("host", "device"):
        raise ValueError(f"augment_on must be 'host' or 'device'. Received: {config.augment_on!r}")
    epoch = int(epoch)
    if epoch < 0 or (stop_epoch is not None and int(stop_epoch) < epoch):
        raise ValueError(f"Need 0 <= epoch <= stop_epoch. Received: epoch={epoch}, "
                         f"stop_epoch={stop_epoch}")
    seed = int(config.seed) if seed is None else int(seed)
    source = data.train if with_labels else data.pretrain
    buffer = _shuffle_buffer(data, num)
    params = AugmentParams.from_config(config) if config.augment_on == "host" else None
    steps = num // batch

    def epoch_batches(e):
        ds = source
        if shuffle:  # a Python seed: tf.data shuffles take no tensor seed with a global seed
            ds = ds.shuffle(buffer, seed=seed * _EPOCH_SEEDS + e, reshuffle_each_iteration=False)
        return ds.batch(batch, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)

    last = epoch + 1 if stop_epoch is None else int(stop_epoch)
    if last == epoch:
        ds = source.take(0).batch(batch, drop_remainder=True)
    else:
        parts = [epoch_batches(e) for e in range(epoch, last)]
        while len(parts) > 1:  # a balanced tree of concatenations: depth log2(epochs)
            parts = [parts[i].concatenate(parts[i + 1]) if i + 1 < len(parts) else parts[i]
                     for i in range(0, len(parts), 2)]
        ds = parts[0]
    ds = ds.apply(tf.data.experimental.assert_cardinality((last - epoch) * steps))
    if params is not None:
        def two_views(index, batch_data):
            images, labels = batch_data if with_labels else (batch_data, None)
            # Batch ``index`` of this dataset is step index % steps of epoch
            # epoch + index // steps.
            e = epoch + index // steps
            pair_seed = tf.stack([tf.constant(seed + 1, tf.int64),
                                  e * _STEP_SEEDS + index % steps])
            views = augment_batch(tf.concat([images, images], axis=0), params, pair_seed,
                                  xla=xla)
            if with_labels:
                return (views[:batch], views[batch:]), labels
            return views[:batch], views[batch:]

        ds = ds.enumerate().map(two_views, num_parallel_calls=tf.data.AUTOTUNE,
                                deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if params is not None and intra_op_parallelism is not None:
        options = tf.data.Options()
        options.threading.max_intra_op_parallelism = int(intra_op_parallelism)
        ds = ds.with_options(options)
    return ds


def evaluation_dataset(split: tf.data.Dataset, config, batch_size: Optional[int] = None
                       ) -> tf.data.Dataset:
    """``(eval_transform(images), labels)`` batches in order (no shuffle, last batch kept).
    ``batch_size`` defaults to ``config.batch_size``."""
    params = AugmentParams.from_config(config)
    batch = int(batch_size or config.batch_size)
    ds = split.batch(batch, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (eval_transform(x, params), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
