"""The two-view augmentation recipe in ``keras.ops``: the same maths on every backend.

This module imports no TensorFlow (only keras, keras.ops, NumPy and config), so
the recipe also runs inside the JAX train step (``augment_on="device"`` under
``KERAS_BACKEND=jax``). Under TensorFlow every op here is a ``tf`` op, so the
same functions trace inside ``tf.data`` and ``tf.function`` (also with
``jit_compile=True``): :mod:`data_processing.augmentations` keeps only the
TensorFlow parts (the ``tf.random`` draw, the XLA-compiled stages, the tf.data
pipelines) and calls these functions.

The recipe is the SimCLR / BYOL augmentation with the CIFAR settings of the
official DirectPred code, i.e. torchvision's::

    RandomResizedCrop(size, scale, ratio) -> RandomHorizontalFlip(flip_prob)
    -> RandomApply([ColorJitter(b, c, s, h)], jitter_prob) -> RandomGrayscale(p)
    -> RandomApply([GaussianBlur(kernel, sigma)], blur_prob) -> ToTensor -> Normalize

(see :mod:`data_processing.augmentations` for the deviations from PIL). Given the
per-image uniforms ``u`` (float32 ``[B, NUM_UNIFORMS]``, layout below) it is
deterministic: :func:`augment_from_uniforms`. Whole batches go through
vectorised ops: the crop (+ flip) is a per-image bilinear gather, the four
jitter ops run in a per-image random order, the blur is a per-image separable
matrix product.

Column layout of ``u`` (one view)::

    C_AREA .. +10   crop area draws        C_RATIO .. +10  crop log-aspect draws
    C_TOP, C_LEFT   crop offset            C_FLIP          flip
    C_JITTER_ON     jitter applied         C_FACTORS .. +4 brightness, contrast,
    C_ORDER .. +4   jitter order keys                      saturation, hue factors
    C_GRAY          grayscale              C_BLUR_ON, C_SIGMA  blur applied, sigma
"""

from __future__ import annotations

import math
from typing import Tuple

import keras
import numpy as np
from keras import ops

from config.groups import AugmentParams  # the augmentation group, defined with the others

#: Luma weights of torchvision ``rgb_to_grayscale`` (ITU-R 601-2).
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)
#: RandomResizedCrop tries this many (area, ratio) draws before the centre-crop fallback.
CROP_ATTEMPTS = 10

# Column layout of the per-image uniform draws of one view.
C_AREA = 0
C_RATIO = C_AREA + CROP_ATTEMPTS
C_TOP = C_RATIO + CROP_ATTEMPTS
C_LEFT = C_TOP + 1
C_FLIP = C_LEFT + 1
C_JITTER_ON = C_FLIP + 1
C_FACTORS = C_JITTER_ON + 1      # brightness, contrast, saturation, hue
C_ORDER = C_FACTORS + 4          # 4 keys whose ranks give the op order
C_GRAY = C_ORDER + 4
C_BLUR_ON = C_GRAY + 1
C_SIGMA = C_BLUR_ON + 1
#: Uniforms per image and view.
NUM_UNIFORMS = C_SIGMA + 1


# ---------------------------------------------------------------------------
# Deterministic building blocks (all batched; u are the per-image uniforms).
# ---------------------------------------------------------------------------

def crop_boxes(u, height, width, params):
    """torchvision ``RandomResizedCrop.get_params`` per image: (top, left, h, w) floats.
    ``height``, ``width``: float32 scalars (Python numbers or tensors)."""
    area = height * width
    lo, hi = params.crop_scale
    target = area * (lo + (hi - lo) * u[:, C_AREA:C_AREA + CROP_ATTEMPTS])
    log_lo, log_hi = math.log(params.crop_ratio[0]), math.log(params.crop_ratio[1])
    aspect = ops.exp(log_lo + (log_hi - log_lo) * u[:, C_RATIO:C_RATIO + CROP_ATTEMPTS])
    w = ops.round(ops.sqrt(target * aspect))
    h = ops.round(ops.sqrt(target / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = ops.argmax(ops.cast(fits, "int32"), axis=1)[:, None]
    w = ops.take_along_axis(w, first, axis=1)[:, 0]
    h = ops.take_along_axis(h, first, axis=1)[:, 0]
    # Fallback of torchvision: whole image, aspect clamped to the ratio range, centred.
    in_ratio = width / height
    fb_w = ops.where(in_ratio < params.crop_ratio[0], width,
                     ops.where(in_ratio > params.crop_ratio[1],
                               ops.round(height * params.crop_ratio[1]), width))
    fb_h = ops.where(in_ratio < params.crop_ratio[0], ops.round(width / params.crop_ratio[0]),
                     height)
    found = ops.any(fits, axis=1)
    h = ops.where(found, h, fb_h)
    w = ops.where(found, w, fb_w)
    top = ops.where(found, ops.minimum(ops.floor(u[:, C_TOP] * (height - h + 1)), height - h),
                    ops.floor((height - h) / 2))
    left = ops.where(found, ops.minimum(ops.floor(u[:, C_LEFT] * (width - w + 1)), width - w),
                     ops.floor((width - w) / 2))
    return top, left, h, w


def interp_indices(start, length, size, reverse=None):
    """Source indices/weights of ``size`` outputs resampling the pixels
    [start, start + length) of an axis: bilinear with half-pixel centres, clamped to
    the crop window (= torchvision crop, then resize; no antialiasing, which only
    matters when a crop is larger than the output). Returns int32 ``i0``, ``i1``
    and float32 ``frac``, each [B, size]."""
    k = ops.arange(size, dtype="float32")[None, :]
    if reverse is not None:  # horizontal flip: output column k samples column size-1-k
        k = ops.where(reverse[:, None], size - 1 - k, k)
    src = start[:, None] + (k + 0.5) * (length[:, None] / size) - 0.5
    src = ops.minimum(ops.maximum(src, start[:, None]), (start + length - 1)[:, None])
    i0 = ops.floor(src)
    frac = src - i0
    i0 = ops.cast(i0, "int32")
    i1 = ops.minimum(i0 + 1, ops.cast(start + length - 1, "int32")[:, None])
    return i0, i1, frac


def _batch_take(x, index):
    """``x[b, index[b, j]]`` for x [B, N, ...] and int32 index [B, J]: [B, J, ...]
    (TensorFlow's ``gather(x, index, axis=1, batch_dims=1)``) as one flat take."""
    shape = ops.shape(x)
    flat = ops.reshape(x, (-1,) + tuple(shape[2:]))
    offsets = ops.arange(shape[0], dtype="int32")[:, None] * shape[1]
    return ops.take(flat, index + offsets, axis=0)


def crop_flip(images, u, params):
    """RandomResizedCrop to ``image_size`` + horizontal flip; float32 on the 0..1 scale.
    ``images``: uint8 or float on the 0..255 scale, [B, H, W, 3]."""
    shape = ops.shape(images)
    height = ops.cast(shape[1], "float32")
    width = ops.cast(shape[2], "float32")
    size = params.image_size
    top, left, h, w = crop_boxes(u, height, width, params)
    flip = u[:, C_FLIP] < params.flip_prob
    r0, r1, fy = interp_indices(top, h, size)
    c0, c1, fx = interp_indices(left, w, size, reverse=flip)
    # Columns first, on the (transposed) uint8 images, then rows: both takes gather
    # contiguous rows (as fast as TensorFlow's batched gather under XLA).
    columns = ops.transpose(images, (0, 2, 1, 3))                  # [B, W, H, 3]
    cols0 = ops.cast(_batch_take(columns, c0), "float32")
    cols1 = ops.cast(_batch_take(columns, c1), "float32")
    fx = fx[:, :, None, None] * (1.0 / 255.0)
    cols = ops.transpose(cols0 * (1.0 / 255.0 - fx) + cols1 * fx, (0, 2, 1, 3))  # [B, H, S, 3]
    rows0 = _batch_take(cols, r0)
    rows1 = _batch_take(cols, r1)
    return rows0 + (rows1 - rows0) * fy[:, :, None, None]          # [B, S, S, 3]


def gray(x):
    """torchvision's luma of float RGB ``x`` [..., 3]: [..., 1]."""
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    return (GRAY_WEIGHTS[0] * r + GRAY_WEIGHTS[1] * g + GRAY_WEIGHTS[2] * b)[..., None]


def hue_shift(x, delta):
    """torchvision ``adjust_hue``: rotate the HSV hue by ``delta`` turns ([B] tensor).
    ``keras.ops.image``'s HSV conversions: ``tf.image``'s under TensorFlow."""
    hsv = ops.image.rgb_to_hsv(x, data_format="channels_last")
    hue = hsv[..., 0] + delta[:, None, None]
    hue = hue - ops.floor(hue)  # mod 1 (tf.math.floormod is slow under XLA on CPU)
    return ops.image.hsv_to_rgb(ops.stack([hue, hsv[..., 1], hsv[..., 2]], axis=-1),
                                data_format="channels_last")


def jitter_phases(params):
    """The jitter phases that do something for these params (see :func:`color_jitter`)."""
    active = [v > 0 for v in params.jitter[:3]]
    hue = params.jitter[3] > 0
    if params.jitter_prob <= 0 or not (any(active) or hue):
        return ()
    if not hue:
        return ("blend",)
    return ("pre", "hue", "post") if any(active) else ("hue",)


def color_jitter(x, u, params, phase=None):
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
        for ph in jitter_phases(params):
            x = color_jitter(x, u, params, ph)
        return x
    on = u[:, C_JITTER_ON] < params.jitter_prob
    h = params.jitter[3]
    if phase == "hue":
        return hue_shift(x, ops.where(on, -h + 2.0 * h * u[:, C_FACTORS + 3], 0.0))
    factors = []
    for i, v in enumerate(params.jitter[:3]):
        lo, hi = max(0.0, 1.0 - v), 1.0 + v
        factors.append(ops.where(on, lo + (hi - lo) * u[:, C_FACTORS + i], 1.0))
    active = [v > 0 for v in params.jitter[:3]]
    # Position (0..3) of each op: rank of its uniform key among the four.
    keys = u[:, C_ORDER:C_ORDER + 4]
    pos = ops.sum(ops.cast(keys[:, None, :] < keys[:, :, None], "int32"), axis=-1)
    hue_pos = pos[:, 3]

    def blend_slot(x, slot, keep):
        """Applies the blend op at ``slot`` to the images where ``keep`` (a [B] bool)."""
        f = ops.ones_like(factors[0])
        c_mean = ops.zeros_like(f)
        c_gray = ops.zeros_like(f)
        for op in range(3):
            if not active[op]:
                continue
            sel = pos[:, op] == slot
            if keep is not None:
                sel = sel & keep
            f = ops.where(sel, factors[op], f)
            if op == 1:
                c_mean = ops.where(sel, 1.0, c_mean)
            elif op == 2:
                c_gray = ops.where(sel, 1.0, c_gray)
        f = f[:, None, None, None]
        target = 0.0
        if active[1] or active[2]:
            luma = gray(x)
            if active[1]:
                mean = ops.mean(luma, axis=(1, 2, 3), keepdims=True)
                target = c_mean[:, None, None, None] * mean
            if active[2]:
                target = target + c_gray[:, None, None, None] * luma
        return ops.clip(f * x + (1.0 - f) * target, 0.0, 1.0)

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


def blur_matrices(sigma, size, kernel_size):
    """[B, size, size] matrices of a 1-D Gaussian blur (reflect padding, as torchvision)."""
    half = (kernel_size - 1) / 2.0
    taps = np.linspace(-half, half, kernel_size).astype(np.float32)
    kernel = ops.exp(-0.5 * ops.square(taps[None, :] / sigma[:, None]))
    kernel = kernel / ops.sum(kernel, axis=1, keepdims=True)       # [B, k]
    # Source index of every (output, tap) pair with reflect padding; a static [S, k] table.
    rad = kernel_size // 2
    src = np.empty((size, kernel_size), np.int64)
    for o in range(size):
        for t in range(kernel_size):
            i = o + t - rad
            while i < 0 or i >= size:  # reflect (without repeating the edge), as F.pad "reflect"
                i = -i if i < 0 else 2 * (size - 1) - i
            src[o, t] = i
    onehot = np.eye(size, dtype=np.float32)[src]                     # [S, k, S]
    return ops.einsum("bk,oki->boi", kernel, onehot)


def blur(x, u, params):
    """``RandomApply([GaussianBlur(kernel, sigma)], p)``, sigma ~ U(blur_sigma) per image."""
    if params.blur_prob <= 0:
        return x
    lo, hi = params.blur_sigma
    sigma = lo + (hi - lo) * u[:, C_SIGMA]
    size = params.image_size
    k = params.blur_kernel_size
    if size == 1:
        k = 1  # nothing to reflect
    mats = blur_matrices(sigma, size, k)
    on = (u[:, C_BLUR_ON] < params.blur_prob)[:, None, None]
    mats = ops.where(on, mats, np.eye(size, dtype=np.float32)[None])
    x = ops.einsum("boi,bijc->bojc", mats, x)      # vertical
    return ops.einsum("boj,bijc->bioc", mats, x)   # horizontal


def normalize(x, params):
    """``(x - mean) / std`` per channel, for ``x`` on the 0..1 scale."""
    mean = np.asarray(params.normalize_mean, np.float32)
    inv_std = np.asarray([1.0 / s for s in params.normalize_std], np.float32)
    return (x - mean) * inv_std


def grayscale_blur_normalize(x, u, params):
    """RandomGrayscale, then the blur, then :func:`normalize` (the last stage)."""
    if params.grayscale_prob > 0:
        gray_on = ops.cast(u[:, C_GRAY] < params.grayscale_prob, "float32")
        x = x + gray_on[:, None, None, None] * (gray(x) - x)
    x = blur(x, u, params)
    return normalize(x, params)


def stage_fns(params):
    """The recipe as a list of ``fn(x, u) -> x`` stages (crop + flip, the jitter
    phases, grayscale + blur + normalise); TensorFlow XLA-compiles each on its own."""
    stages = [lambda x, u: crop_flip(x, u, params)]
    for phase in jitter_phases(params):
        stages.append(lambda x, u, phase=phase: color_jitter(x, u, params, phase))
    stages.append(lambda x, u: grayscale_blur_normalize(x, u, params))
    return stages


def augment_from_uniforms(images, u, params: AugmentParams):
    """ONE augmented view of a batch given its uniforms: float32 [B, S, S, 3], normalised.

    ``images``: uint8 (or float on the 0..255 scale) [B, H, W, 3]; ``u``: float32
    [B, NUM_UNIFORMS] in [0, 1) (the layout in the module docstring). Deterministic:
    the same (images, u) give the same view on every backend."""
    images = ops.convert_to_tensor(images)
    if len(images.shape) != 4:
        raise ValueError("augment_from_uniforms expects [B, H, W, 3] images. "
                         f"Received shape {images.shape}")
    if keras.backend.standardize_dtype(images.dtype) != "uint8":
        images = ops.cast(images, "float32")
    u = ops.cast(u, "float32")
    x = images
    for stage in stage_fns(params):
        x = stage(x, u)
    return x


# ---------------------------------------------------------------------------
# The evaluation view.
# ---------------------------------------------------------------------------

def resize_shape(height: int, width: int, size: int) -> Tuple[int, int]:
    """(new_h, new_w) with the shorter side resized to ``size`` (float32 arithmetic,
    rounded half to even, at least ``size``)."""
    scale = np.float32(size) / np.float32(min(height, width))
    new_h = max(size, int(np.round(np.float32(height) * scale)))
    new_w = max(size, int(np.round(np.float32(width) * scale)))
    return new_h, new_w


def resize_center(images, size):
    """Resizes the shorter side to ``size`` (bilinear, antialiased) and centre-crops;
    float32 (the identity when the images already are ``size`` x ``size``). Needs a
    static height and width."""
    height, width = ops.shape(images)[1:3]
    if not (isinstance(height, int) and isinstance(width, int)):
        raise ValueError("eval_transform needs images of a static height and width. "
                         f"Received shape {ops.shape(images)}")
    x = ops.cast(images, "float32")
    if height == size and width == size:
        return x
    new_h, new_w = resize_shape(height, width, size)
    x = ops.image.resize(x, (new_h, new_w), interpolation="bilinear", antialias=True,
                         data_format="channels_last")
    top = (new_h - size) // 2
    left = (new_w - size) // 2
    return x[:, top:top + size, left:left + size, :]


def eval_transform(images, params: AugmentParams):
    """Deterministic evaluation view: resize shorter side + centre crop to ``image_size``
    (identity when already that size), then ``(x / 255 - mean) / std``; float32."""
    images = ops.convert_to_tensor(images)
    x = resize_center(images, params.image_size)
    return normalize(x * (1.0 / 255.0), params)
