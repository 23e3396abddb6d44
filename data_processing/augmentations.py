"""Batched two-view augmentation for non-contrastive SSL (BYOL / SimSiam / DirectPred).

The recipe is the SimCLR / BYOL augmentation (Chen et al. 2020, App. A; Grill et
al. 2020, App. B) with the CIFAR settings of the official DirectPred code
(facebookresearch/luckmatters ``ssl/real-dataset/data/transforms.py``), i.e. the
torchvision pipeline::

    RandomResizedCrop(size, scale, ratio) -> RandomHorizontalFlip(flip_prob)
    -> RandomApply([ColorJitter(b, c, s, h)], jitter_prob) -> RandomGrayscale(p)
    -> RandomApply([GaussianBlur(kernel, sigma)], blur_prob) -> ToTensor -> Normalize

This module is the TensorFlow side: the per-image random draw (one [B, N]
uniform draw per view, ``tf.random``, stateful or stateless), the XLA-compiled
stages and the tf.data pipelines. The deterministic recipe given the draw is
:mod:`data_processing.augment_ops` (``keras.ops``, tf ops here; the same functions
run in the JAX train step): whole batches go through vectorised ops, the crop (+
flip) is a per-image bilinear gather, the four jitter ops run in a per-image
random order, the blur is a per-image separable matrix product. It runs as a few
XLA-compiled stages (fused elementwise loops), which makes the host pipeline
several times faster than a per-image ``Dataset.map`` (see
``benchmarks/input_pipeline.py``). The pipelines need ``KERAS_BACKEND=tensorflow``
(the raw uint8 batches of ``augment_on="device"`` excepted).

Deviations from torchvision-on-PIL: float arithmetic throughout (PIL rounds to
uint8 after every op), and the crop is resized bilinearly without antialiasing
(only matters for crops larger than the output, i.e. never for CIFAR at 32 px).

Image inputs are uint8, or float on the same 0..255 scale (e.g. a cast uint8
batch); outputs are float32 ``(x / 255 - mean) / std``.
"""

from __future__ import annotations

import functools
from typing import Optional

import keras
import tensorflow as tf

from data_processing import augment_ops
from data_processing.sources import check_pretraining_args, tf_data_seeds
# The recipe and its parameters: the backend-agnostic augment_ops (tf ops here).
from data_processing.augment_ops import (NUM_UNIFORMS, AugmentParams, augment_from_uniforms,
                                         eval_transform)


def _require_tensorflow_backend(what):
    """The recipe is keras.ops: inside tf.data / tf.function it needs them to be tf ops."""
    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise ValueError(f"{what} runs the keras.ops augmentation inside TensorFlow graphs "
                         "and needs KERAS_BACKEND=tensorflow (under another backend, "
                         "augment in the train step: augment_on='device'). "
                         f"Received backend {backend!r}")


# ---------------------------------------------------------------------------
# Random numbers: one [B, N] uniform draw per view.
# ---------------------------------------------------------------------------

def _uniforms(batch, seed):
    shape = tf.stack([batch, NUM_UNIFORMS])
    if seed is None:
        return tf.random.uniform(shape, dtype=tf.float32)
    seed = tf.convert_to_tensor(seed)
    if seed.dtype not in (tf.int32, tf.int64):
        seed = tf.cast(seed, tf.int64)
    return tf.random.stateless_uniform(shape, seed=seed, dtype=tf.float32)


@functools.lru_cache(maxsize=64)
def _compiled_stages(params: AugmentParams, xla: bool):
    """Each stage of :func:`augment_ops.stage_fns` XLA-compiled on its own: XLA fuses
    the elementwise work inside a stage, and materialising between stages stops it
    from recomputing the crop / earlier slots inside later fusions (measured ~1.5x
    faster than one cluster)."""
    if not xla:
        return (functools.partial(augment_from_uniforms, params=params),)
    return tuple(tf.function(fn, jit_compile=True, reduce_retracing=True)
                 for fn in augment_ops.stage_fns(params))


def augment_batch(images, params: AugmentParams, seed=None, *, xla: bool = True
                  ) -> tf.Tensor:
    """Returns ONE augmented view of a batch: float32 [B, S, S, 3], normalised.

    ``images``: uint8 (or float on the 0..255 scale) [B, H, W, 3]. ``seed``: None
    (stateful ``tf.random``) or an int32/int64 shape-[2] tensor (stateless ops:
    the same seed gives the same output). ``xla``: run the deterministic part
    (:func:`augment_ops.augment_from_uniforms`) as XLA-compiled stages (False: the
    same ops as one plain graph). Traceable inside ``tf.function``.
    """
    _require_tensorflow_backend("augment_batch")
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


# ---------------------------------------------------------------------------
# tf.data pipelines.
# ---------------------------------------------------------------------------

#: Default tf.data ``max_intra_op_parallelism`` of the host pipeline. With 1,
#: parallelism comes from concurrent batches only, which is ~25% faster on 2 cores.
DEFAULT_INTRA_OP_PARALLELISM = 1
#: Shuffle buffers are capped at this many bytes of images (a full shuffle for CIFAR).
_SHUFFLE_BYTES = 256 * 1024 * 1024


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
    (seed, e, s): :func:`sources.tf_data_seeds`. Iterating the dataset again gives the
    same batches; a run resumed at epoch e (``epoch=e``) sees exactly the batches the
    uninterrupted run saw from e on.

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
    num = int(data.num_train if with_labels else data.num_pretrain)
    batch, epoch, last = check_pretraining_args(config, num, epoch, stop_epoch)
    seed = int(config.seed) if seed is None else int(seed)
    source = data.train if with_labels else data.pretrain
    buffer = _shuffle_buffer(data, num)
    params = AugmentParams.from_config(config) if config.augment_on == "host" else None
    if params is not None:
        _require_tensorflow_backend("pretraining_dataset(augment_on='host')")
    steps = num // batch

    def epoch_batches(e):
        ds = source
        if shuffle:  # a Python seed: tf.data shuffles take no tensor seed with a global seed
            ds = ds.shuffle(buffer, seed=tf_data_seeds(seed, e)[0],
                            reshuffle_each_iteration=False)
        return ds.batch(batch, drop_remainder=True, num_parallel_calls=tf.data.AUTOTUNE)

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
            _, (first, second) = tf_data_seeds(seed, epoch + index // steps, index % steps)
            pair_seed = tf.stack([tf.constant(first, tf.int64), second])
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
    _require_tensorflow_backend("evaluation_dataset")
    params = AugmentParams.from_config(config)
    batch = int(batch_size or config.batch_size)
    ds = split.batch(batch, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(lambda x, y: (eval_transform(x, params), y),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.prefetch(tf.data.AUTOTUNE)
