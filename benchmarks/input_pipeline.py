"""Throughput of the two-view pre-training input pipeline (augmented pairs per second).

    python benchmarks/input_pipeline.py                       # in-memory 32 px uint8 source
    python benchmarks/input_pipeline.py --reference           # + per-image Dataset.map baseline
    python benchmarks/input_pipeline.py --dataset folder --data_dir /tmp/cifar10

The source is 50,000 random 32x32 uint8 images held in memory (``--dataset
memory``), any :func:`data_processing.load_dataset` name, or an image folder
(decode time reported separately). The pipeline is ``pretraining_dataset`` with
the default CIFAR recipe of :class:`config.Config` (``augment_on="host"``).
``--reference`` also times a straightforward per-image ``Dataset.map`` of the
same recipe (tf.image ops, ``tf.switch_case`` for the jitter order). The last
line printed is ``pairs_per_s=<number>`` of the batched pipeline.
"""

from __future__ import annotations

import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from config import Config, get_config  # noqa: E402
from data_processing import augment_ops, augmentations, datasets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("dataset", "memory", "'memory' (random uint8 images), 'folder' or any "
                    "load_dataset name.")
flags.DEFINE_string("data_dir", None, "Image folder / tfds data_dir.")
flags.DEFINE_integer("num_images", 50000, "Images of the in-memory source.")
flags.DEFINE_integer("image_size", 32, "Image size.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("warmup", 20, "Batches before timing.")
flags.DEFINE_integer("batches", 200, "Timed batches.")
flags.DEFINE_float("blur_prob", 0.0, "Gaussian blur probability (CIFAR recipe: 0).")
flags.DEFINE_bool("reference", False, "Also time a per-image Dataset.map of the recipe.")
flags.DEFINE_bool("xla", True, "XLA-compile the batched augmentation.")


def reference_augment(image, p: augment_ops.AugmentParams):
    """One view of ONE uint8 image with per-image tf.image ops (the straightforward way)."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    # RandomResizedCrop.get_params: first of 10 draws that fits, else centre crop.
    area = height * width * tf.random.uniform([10], p.crop_scale[0], p.crop_scale[1])
    aspect = tf.exp(tf.random.uniform([10], math.log(p.crop_ratio[0]), math.log(p.crop_ratio[1])))
    w = tf.round(tf.sqrt(area * aspect))
    h = tf.round(tf.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    k = tf.argmax(tf.cast(fits, tf.int32))
    found = tf.reduce_any(fits)
    h = tf.cast(tf.where(found, h[k], height), tf.int32)
    w = tf.cast(tf.where(found, w[k], width), tf.int32)
    top = tf.random.uniform([], 0, shape[0] - h + 1, dtype=tf.int32)
    left = tf.random.uniform([], 0, shape[1] - w + 1, dtype=tf.int32)
    x = tf.image.crop_to_bounding_box(image, top, left, h, w)
    x = tf.image.resize(x, [p.image_size, p.image_size]) / 255.0
    x = tf.cond(tf.random.uniform([]) < p.flip_prob, lambda: tf.image.flip_left_right(x),
                lambda: x)

    def gray(x):
        return tf.image.rgb_to_grayscale(x)

    def jitter(x):
        b, c, s, hue = p.jitter
        fb = tf.random.uniform([], max(0.0, 1 - b), 1 + b)
        fc = tf.random.uniform([], max(0.0, 1 - c), 1 + c)
        fs = tf.random.uniform([], max(0.0, 1 - s), 1 + s)
        fh = tf.random.uniform([], -hue, hue)
        ops = [lambda x: tf.clip_by_value(x * fb, 0.0, 1.0),
               lambda x: tf.clip_by_value(fc * x + (1 - fc) * tf.reduce_mean(gray(x)), 0.0, 1.0),
               lambda x: tf.clip_by_value(fs * x + (1 - fs) * gray(x), 0.0, 1.0),
               lambda x: tf.image.adjust_hue(x, fh)]
        order = tf.random.shuffle(tf.range(4))
        for i in range(4):
            x = tf.switch_case(order[i], [lambda op=op: op(x) for op in ops])
        return x

    x = tf.cond(tf.random.uniform([]) < p.jitter_prob, lambda: jitter(x), lambda: x)
    x = tf.cond(tf.random.uniform([]) < p.grayscale_prob,
                lambda: tf.tile(gray(x), [1, 1, 3]), lambda: x)
    return (x - p.normalize_mean) / p.normalize_std


def reference_pipeline(images: np.ndarray, config: Config) -> tf.data.Dataset:
    p = augment_ops.AugmentParams.from_config(config)
    ds = tf.data.Dataset.from_tensor_slices(images).shuffle(len(images), seed=0)
    ds = ds.map(lambda x: (reference_augment(x, p), reference_augment(x, p)),
                num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(config.batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def time_pairs(ds: tf.data.Dataset, batch: int, warmup: int, batches: int) -> float:
    it = iter(ds.repeat())
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        views = next(it)
    views[0].numpy()
    return batches * batch / (time.perf_counter() - start)


def main(argv):
    del argv
    config = get_config("byol", dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
                        image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
                        blur_prob=FLAGS.blur_prob)
    if FLAGS.dataset == "memory":
        rng = np.random.default_rng(0)
        images = rng.integers(0, 256, (FLAGS.num_images, FLAGS.image_size, FLAGS.image_size, 3),
                              dtype=np.uint8)
        labels = np.zeros(len(images), np.int32)
        data = datasets.from_arrays(images, labels, images[:10], labels[:10], ("x",))
    else:
        start = time.perf_counter()
        data = datasets.load_dataset_from_config(config)
        seconds = time.perf_counter() - start
        total = data.num_train + data.num_test
        print(f"load_s={seconds:.2f} images={total} decode_images_per_s={total / seconds:.0f}")
        images = np.stack(list(data.pretrain.as_numpy_iterator())) if FLAGS.reference else None
    print(f"source={FLAGS.dataset} images={data.num_pretrain} batch={FLAGS.batch_size} "
          f"xla={FLAGS.xla} cpus={os.cpu_count()}")
    if FLAGS.reference:
        ref = time_pairs(reference_pipeline(images, config), FLAGS.batch_size,
                         FLAGS.warmup, FLAGS.batches)
        print(f"reference_per_image_map_pairs_per_s={ref:.0f}")
    ds = augmentations.pretraining_dataset(data, config, xla=FLAGS.xla)
    rate = time_pairs(ds, FLAGS.batch_size, FLAGS.warmup, FLAGS.batches)
    print(f"pairs_per_s={rate:.0f}")


if __name__ == "__main__":
    app.run(main)
