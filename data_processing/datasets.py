"""Image datasets for SSL pre-training and linear / kNN evaluation.

:func:`load_dataset` returns an :class:`ImageDataset` of unbatched, deterministically
ordered ``tf.data`` pipelines of uint8 ``[H, W, 3]`` images from

* TensorFlow Datasets: ``cifar10`` (default), ``stl10`` (96 px; like any tfds
  dataset with an ``unlabelled`` split, pre-training on ``train`` + ``unlabelled``,
  evaluation on ``train`` / ``test``), ``tf_flowers`` (like any dataset with only a
  ``train`` split: a fixed seeded 85/15 train/test split) and any other tfds
  image-classification dataset with ``image`` / ``label`` features (``test``, else
  ``validation``, is the test split);
* ``folder``: an image folder ``ROOT/{train,test}/<class>/*.{jpg,jpeg,png}``,
  decoded once with TF ops into memory;
* ``synthetic``: small class-structured images generated with NumPy (tests, demos).

Every dataset honours ``image_size`` (shorter side resized, antialiased bilinear,
then centre-cropped), ``max_train_examples`` / ``max_test_examples`` (a seeded
permutation, first N, kept in original order; the train limit also applies to
the pre-training set), ``validation_examples`` (see :func:`hold_out_validation`)
and ``seed``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
from typing import Optional, Sequence
from urllib.parse import urlparse

import numpy as np
import tensorflow as tf

from data_processing import sources
from data_processing.sources import (FOLDER_HINT, SYNTHETIC_CLASSES, check_same_size,
                                     folder_splits, subset_indices)

#: Seed of the fixed train/test split of datasets that ship with a single split.
SPLIT_SEED = 20210601
#: Fraction of a single-split dataset kept for training (rest: test).
TRAIN_FRACTION = 0.85
#: tfds pipelines smaller than this many bytes are cached in memory after one pass.
_CACHE_BYTES = 1 << 30


class ImageDataset(sources.Dataset):
    """Unbatched, deterministically ordered tf.data pipelines of one dataset
    (:class:`sources.Dataset`): ``pretrain`` uint8 ``[H, W, 3]`` images, ``train`` /
    ``test`` ``(uint8 image, int32 label)``."""


# ---------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------

def _fit_image(image, size: Optional[int]):
    """uint8 [H, W, C] -> uint8 [size, size, 3]: RGB, shorter side resized to ``size``
    (bilinear, antialiased) and centre-cropped; unchanged when already that size."""
    if image.shape.rank == 3 and image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    if image.dtype != tf.uint8:
        image = tf.cast(tf.clip_by_value(tf.round(tf.cast(image, tf.float32)), 0, 255), tf.uint8)
    if size is None:
        return image
    shape = tf.shape(image)
    h, w = shape[0], shape[1]

    def resize():
        scale = size / tf.cast(tf.minimum(h, w), tf.float32)
        new_h = tf.maximum(size, tf.cast(tf.round(tf.cast(h, tf.float32) * scale), tf.int32))
        new_w = tf.maximum(size, tf.cast(tf.round(tf.cast(w, tf.float32) * scale), tf.int32))
        x = tf.image.resize(tf.cast(image, tf.float32), tf.stack([new_h, new_w]),
                            method="bilinear", antialias=True)
        top, left = (new_h - size) // 2, (new_w - size) // 2
        x = x[top:top + size, left:left + size, :]
        return tf.cast(tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8)

    same = tf.logical_and(tf.equal(h, size), tf.equal(w, size))
    out = tf.cond(same, lambda: image, resize)
    return tf.ensure_shape(out, [size, size, 3])


def from_arrays(train_x, train_y, test_x, test_y, class_names, pretrain_x=None) -> ImageDataset:
    """An :class:`ImageDataset` of in-memory uint8 [N, S, S, 3] arrays and integer labels."""
    train_t = tf.convert_to_tensor(train_x, tf.uint8)  # one copy shared with pretrain
    pretrain_t = train_t if pretrain_x is None else tf.convert_to_tensor(pretrain_x, tf.uint8)
    return ImageDataset(
        pretrain=tf.data.Dataset.from_tensor_slices(pretrain_t),
        train=tf.data.Dataset.from_tensor_slices((train_t, np.asarray(train_y, np.int32))),
        test=tf.data.Dataset.from_tensor_slices((tf.convert_to_tensor(test_x, tf.uint8),
                                                 np.asarray(test_y, np.int32))),
        num_classes=len(class_names),
        class_names=tuple(class_names),
        image_size=int(train_x.shape[1]),
        num_pretrain=int(pretrain_t.shape[0]),
        num_train=int(len(train_x)),
        num_test=int(len(test_x)),
    )


# ---------------------------------------------------------------------------
# Synthetic data.
# ---------------------------------------------------------------------------

def _load_synthetic(image_size, max_train, max_test, seed) -> ImageDataset:
    return from_arrays(*sources.synthetic_splits(image_size, max_train, max_test, seed),
                       SYNTHETIC_CLASSES)


# ---------------------------------------------------------------------------
# Image folder.
# ---------------------------------------------------------------------------

def _decode_file(path, size):
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    return _fit_image(image, size)


def _decode_if_size(path, size):
    """Decodes a file; returns (image, True) if it is size x size, else (zeros, False).
    Without the resize branch the per-file map is ~2x faster (CIFAR: no resizing)."""
    image = tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    shape = tf.shape(image)
    ok = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    image = tf.cond(ok, lambda: image, lambda: tf.zeros([size, size, 3], tf.uint8))
    return tf.ensure_shape(image, [size, size, 3]), ok


def _map_files(paths, fn, batch):
    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1  # parallel over files, not inside ops
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(list(paths))).map(
        fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts = list(ds.batch(batch).with_options(options).as_numpy_iterator())
    return tf.nest.map_structure(lambda *xs: np.concatenate(xs, axis=0), *parts)


def _decode_failure(path):
    """A short reason why ``path`` does not decode (for the few files named)."""
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as err:
        # without TF's "{{function_node ...}}" prefix and "[Op:DecodeImage] name:" suffix
        text = re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:[^\]]*\].*$", "", err.message).strip()
        return (text.splitlines() or ["undecodable"])[0][:100]
    except OSError as err:
        return err.strerror or str(err)
    return "decodes on its own; failed in the batch"


def undecodable_message(paths, bad):
    """``"N of M image files cannot be decoded: a (reason), ..."`` (TF's reasons)."""
    return sources.undecodable_message(paths, bad, _decode_failure)


def decode_images(paths: Sequence[str], image_size: Optional[int], batch: int = 1024,
                  progress=None) -> np.ndarray:
    """Decodes image files into one uint8 [N, S, S, 3] array with a parallel ``tf.data``
    map (files of another size are then resized: shorter side + centre crop).
    ``image_size`` None: the size of the first decodable image.

    Every file is checked in the same pass (a failing file is dropped with
    ``ignore_errors`` and its index noted): a ValueError counts all undecodable
    files and names the first few with the reason. ``progress(done, total)``, if
    given, is called after every batch of files.
    """
    if not paths:
        raise ValueError("No image files to decode.")
    paths = list(paths)
    if image_size is None:
        for path in paths:
            try:
                first = _decode_file(path, None)
            except tf.errors.OpError:
                continue  # counted and named by the full pass below
            if first.shape[0] != first.shape[1]:
                raise ValueError(
                    f"Image {path} is {first.shape[0]}x{first.shape[1]}, not square: "
                    "pass image_size to resize and centre-crop the images.")
            image_size = int(first.shape[0])
            break
        else:
            raise ValueError(undecodable_message(paths, list(range(len(paths)))))
    files = tf.constant(paths)
    size = image_size

    def decode(i):
        image, ok = _decode_if_size(files[i], size)
        return i, image, ok

    options = tf.data.Options()
    options.threading.max_intra_op_parallelism = 1  # parallel over files, not inside ops
    ds = tf.data.Dataset.range(len(paths)).map(
        decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).ignore_errors()
    parts = []
    for part in ds.batch(batch).with_options(options).as_numpy_iterator():
        parts.append(part)
        if progress is not None:  # files tried so far (the last index reached)
            progress(int(part[0][-1]) + 1, len(paths))
    index = np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, np.int64)
    if len(index) < len(paths):
        bad = np.setdiff1d(np.arange(len(paths)), index).tolist()
        raise ValueError(undecodable_message(paths, bad))
    images = np.concatenate([p[1] for p in parts])
    ok = np.concatenate([p[2] for p in parts])
    others = np.flatnonzero(~ok)
    if len(others):
        images[others] = _map_files([paths[i] for i in others],
                                    lambda p: _decode_file(p, image_size), batch)
    return images


def _load_folder(root, image_size, max_train, max_test, seed, progress=None) -> ImageDataset:
    classes, splits = folder_splits(root, max_train, max_test, seed)
    train_x = decode_images(splits["train"][0], image_size,
                            progress=sources.split_progress(progress, "train"))
    test_x = decode_images(splits["test"][0], image_size,
                           progress=sources.split_progress(progress, "test"))
    check_same_size(root, train_x, test_x)
    return from_arrays(train_x, splits["train"][1], test_x, splits["test"][1], classes)


# ---------------------------------------------------------------------------
# TensorFlow Datasets.
# ---------------------------------------------------------------------------

def unreachable_download_hosts(urls, timeout=5.0, max_hosts=3):
    """``(hosts tried, [unreachable "host (error)"])`` for the hosts of ``urls``: one TCP
    connection each (``timeout`` seconds), stopping at the first that answers and after
    ``max_hosts``, so an offline machine is told within ``timeout * max_hosts`` seconds
    instead of after the downloader's retries (minutes)."""
    tried, unreachable = [], []
    for url in urls:
        parsed = urlparse(url)
        if not parsed.hostname or parsed.hostname in tried:
            continue
        tried.append(parsed.hostname)
        port = parsed.port or (80 if parsed.scheme == "http" else 443)
        try:
            socket.create_connection((parsed.hostname, port), timeout=timeout).close()
            return tried, []
        except OSError as err:
            unreachable.append(f"{parsed.hostname} ({type(err).__name__}: {err})")
        if len(tried) == max_hosts:
            break
    return tried, unreachable


def _tfds_builder(name, data_dir, download):
    import tensorflow_datasets as tfds  # slow import: only when used

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as err:  # DatasetNotFoundError, bad config, ...
        raise ValueError(
            f"Unknown dataset {name!r} (not 'synthetic', 'folder' or a TensorFlow "
            f"Datasets name): {type(err).__name__}: {str(err).splitlines()[0]}. "
            f"{FOLDER_HINT}") from None
    if not builder.is_prepared():
        where = data_dir or ("the default tfds data_dir ("
                             f"{os.environ.get('TFDS_DATA_DIR', '~/tensorflow_datasets')})")
        if not download:
            raise ValueError(
                f"TensorFlow Datasets {name!r} is not prepared in {where} and "
                f"downloading is disabled. {FOLDER_HINT}")
        urls = list(type(builder).url_infos or ())
        tried, unreachable = unreachable_download_hosts(urls)
        if tried and len(unreachable) == len(tried):
            raise ValueError(
                f"TensorFlow Datasets {name!r} is not prepared in {where} and cannot be "
                f"downloaded: no download host answers ({'; '.join(unreachable)}); is this "
                f"machine offline? {FOLDER_HINT}")
        try:
            builder.download_and_prepare()
        except Exception as err:  # no network, checksum, missing extras, ...
            raise ValueError(
                f"Could not download TensorFlow Datasets {name!r} into {where} "
                f"({type(err).__name__}: {err}). {FOLDER_HINT}") from None
    return builder


def _tfds_split(builder, split, keep_mask, size, cache):
    ds = builder.as_dataset(split=split, shuffle_files=False, as_supervised=False)
    if keep_mask is not None:
        keep = tf.constant(keep_mask)
        ds = ds.enumerate().filter(lambda i, ex: tf.gather(keep, i)).map(lambda i, ex: ex)
    ds = ds.map(lambda ex: (_fit_image(ex["image"], size), tf.cast(ex["label"], tf.int32)),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.cache() if cache else ds


def _mask(num, indices):
    mask = np.zeros(num, bool)
    mask[indices] = True
    return None if mask.all() else mask


def _load_tfds(name, data_dir, image_size, max_train, max_test, seed, download) -> ImageDataset:
    builder = _tfds_builder(name, data_dir, download)
    info = builder.info
    if "image" not in info.features or "label" not in info.features:
        raise ValueError(f"TensorFlow Datasets {name!r} is not an image-classification "
                         f"dataset with 'image' and 'label' features.")
    image_shape = info.features["image"].shape
    size = image_size
    if size is None:
        if image_shape[0] is None or image_shape[0] != image_shape[1]:
            raise ValueError(f"{name!r} has images of shape {image_shape}: pass image_size.")
        size = int(image_shape[0])
    label = info.features["label"]
    splits = {s: info.splits[s].num_examples for s in info.splits.keys()}
    if "train" not in splits:
        raise ValueError(f"TensorFlow Datasets {name!r} has no 'train' split "
                         f"(splits: {sorted(splits)}).")

    def keep_of(split, subset):
        return _mask(splits[split], subset)

    if "test" in splits or "validation" in splits:
        test_split = "test" if "test" in splits else "validation"
        train_idx = subset_indices(splits["train"], max_train, seed)
        test_idx = subset_indices(splits[test_split], max_test, seed + 1)
        cache = (len(train_idx) + len(test_idx)) * size * size * 3 < _CACHE_BYTES
        train = _tfds_split(builder, "train", keep_of("train", train_idx), size, cache)
        test = _tfds_split(builder, test_split, keep_of(test_split, test_idx), size, cache)
        num_train, num_test = len(train_idx), len(test_idx)
    else:  # a single split: fixed seeded train/test split (e.g. tf_flowers)
        total = splits["train"]
        perm = np.random.default_rng(SPLIT_SEED).permutation(total)
        cut = int(round(TRAIN_FRACTION * total))
        train_all, test_all = np.sort(perm[:cut]), np.sort(perm[cut:])
        train_idx = train_all[subset_indices(len(train_all), max_train, seed)]
        test_idx = test_all[subset_indices(len(test_all), max_test, seed + 1)]
        cache = (len(train_idx) + len(test_idx)) * size * size * 3 < _CACHE_BYTES
        train = _tfds_split(builder, "train", keep_of("train", train_idx), size, cache)
        test = _tfds_split(builder, "train", keep_of("train", test_idx), size, cache)
        num_train, num_test = len(train_idx), len(test_idx)

    if "unlabelled" in splits:  # stl10: pre-train on train + unlabelled
        total = splits["train"] + splits["unlabelled"]
        pre_idx = subset_indices(total, max_train, seed + 2)
        lab = pre_idx[pre_idx < splits["train"]]
        unl = pre_idx[pre_idx >= splits["train"]] - splits["train"]
        small = len(pre_idx) * size * size * 3 < _CACHE_BYTES
        parts = []
        if len(lab):
            parts.append(_tfds_split(builder, "train", _mask(splits["train"], lab), size, small))
        if len(unl):
            parts.append(_tfds_split(builder, "unlabelled", _mask(splits["unlabelled"], unl),
                                     size, small))
        pretrain = parts[0]
        for part in parts[1:]:
            pretrain = pretrain.concatenate(part)
        pretrain = pretrain.map(lambda x, y: x)
        num_pretrain = len(pre_idx)
    else:
        pretrain = train.map(lambda x, y: x)
        num_pretrain = num_train
    cardinality = tf.data.experimental.assert_cardinality
    return ImageDataset(
        pretrain=pretrain.apply(cardinality(num_pretrain)),
        train=train.apply(cardinality(num_train)),
        test=test.apply(cardinality(num_test)),
        num_classes=int(label.num_classes),
        class_names=tuple(label.names),
        image_size=size,
        num_pretrain=num_pretrain,
        num_train=num_train,
        num_test=num_test,
        pretrain_from_train="unlabelled" not in splits,
    )


def hold_out_validation(data: ImageDataset, num: int, seed: int) -> ImageDataset:
    """``data`` with ``num`` of its train examples (a seeded subset) as the evaluation split.

    For tuning without touching the test split: ``test`` becomes the held-out
    examples, ``train`` the rest, and pre-training no longer sees them either
    (except STL-10, whose pre-training set is its own train + unlabelled subset).
    """
    held_out = sources.held_out_mask(data.num_train, num, seed)
    held_out = tf.constant(held_out)

    def part(keep_held_out):
        kept = data.train.enumerate().filter(lambda i, _: held_out[i] == keep_held_out)
        return kept.map(lambda i, example: example)

    cardinality = tf.data.experimental.assert_cardinality
    num_train = data.num_train - num
    train = part(False).apply(cardinality(num_train))
    pretrain, num_pretrain = data.pretrain, data.num_pretrain
    if data.pretrain_from_train:
        pretrain, num_pretrain = train.map(lambda x, y: x), num_train
    return dataclasses.replace(
        data, pretrain=pretrain, train=train, test=part(True).apply(cardinality(num)),
        num_pretrain=num_pretrain, num_train=num_train, num_test=num,
        eval_split="validation")


# ---------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------

def load_dataset(name: str = "cifar10", *, data_dir: Optional[str] = None,
                 image_size: Optional[int] = None, max_train_examples: Optional[int] = None,
                 max_test_examples: Optional[int] = None, seed: int = 0,
                 download: bool = True, validation_examples: int = 0,
                 progress=None) -> ImageDataset:
    """Loads ``name`` (``synthetic``, ``folder`` or a tfds name) as an :class:`ImageDataset`.

    tfds data are read from ``data_dir`` (tfds default when None); an unprepared
    dataset is downloaded unless ``download=False``; any failure raises a
    ValueError explaining how to use a local image folder instead. With
    ``validation_examples`` > 0 the evaluation split is held out of the train
    split (:func:`hold_out_validation`) and the test split is not read.
    ``progress(split, done, total)``: called while an image folder is decoded.
    """
    name = sources.check_load_args(name, image_size, max_train_examples, max_test_examples,
                                   validation_examples)
    if validation_examples:
        data = load_dataset(name, data_dir=data_dir, image_size=image_size,
                            max_train_examples=max_train_examples, max_test_examples=1,
                            seed=seed, download=download, progress=progress)
        return hold_out_validation(data, int(validation_examples), seed)
    if name == "synthetic":
        data = _load_synthetic(image_size, max_train_examples, max_test_examples, seed)
    elif name == "folder":
        data = _load_folder(data_dir, image_size, max_train_examples, max_test_examples, seed,
                            progress)
    else:
        data = _load_tfds(name, data_dir, image_size, max_train_examples, max_test_examples,
                          seed, download)
    sources.check_classes(name, data.num_classes)
    return data


def load_dataset_from_config(config, progress=None) -> ImageDataset:
    """:func:`load_dataset` with the data fields of a :class:`config.Config`."""
    return load_dataset(config.dataset, **sources.load_args(config), progress=progress)
