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

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

FOLDER_HINT = (
    "To train on a local copy instead, use an image folder: "
    "--dataset folder --data_dir PATH with PATH/train/<class>/*.jpg|png and "
    "PATH/test/<class>/*.jpg|png (the same class folders in both).")

#: Seed of the fixed train/test split of datasets that ship with a single split.
SPLIT_SEED = 20210601
#: Fraction of a single-split dataset kept for training (rest: test).
TRAIN_FRACTION = 0.85
#: tfds pipelines smaller than this many bytes are cached in memory after one pass.
_CACHE_BYTES = 1 << 30


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """Unbatched, deterministically ordered pipelines of one dataset.

    ``pretrain``: uint8 ``[H, W, 3]`` images (no labels), the SSL pre-training set;
    ``train`` / ``test``: ``(uint8 image, int32 label)`` for linear eval / kNN.
    """

    pretrain: tf.data.Dataset
    train: tf.data.Dataset
    test: tf.data.Dataset
    num_classes: int
    class_names: tuple
    image_size: int
    num_pretrain: int
    num_train: int
    num_test: int
    #: True when ``pretrain`` is the images of ``train`` (False for STL-10's
    #: train + unlabelled pre-training set).
    pretrain_from_train: bool = True
    #: "test", or "validation" when ``test`` holds train examples held out for tuning.
    eval_split: str = "test"


# ---------------------------------------------------------------------------
# Shared helpers.
# ---------------------------------------------------------------------------

def subset_indices(num: int, max_examples: Optional[int], seed: int) -> np.ndarray:
    """Indices of a deterministic subset: a seeded permutation, first ``max_examples``,
    returned sorted (original order). All indices when ``max_examples`` is None or >= num."""
    if max_examples is None or max_examples >= num:
        return np.arange(num)
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1. Received: {max_examples!r}")
    perm = np.random.default_rng(seed).permutation(num)
    return np.sort(perm[:max_examples])


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

SYNTHETIC_CLASSES = ("red_disc", "green_square", "blue_triangle", "yellow_ring",
                     "magenta_hstripes", "cyan_vstripes", "orange_cross",
                     "purple_checker", "white_diamond", "olive_diagonal")
_SYNTHETIC_COLOURS = np.array([
    [220, 40, 40], [40, 200, 60], [50, 70, 230], [230, 220, 40], [220, 50, 220],
    [40, 220, 220], [250, 140, 20], [130, 40, 180], [240, 240, 240], [130, 130, 30]],
    dtype=np.float32)
SYNTHETIC_TRAIN = 5000
SYNTHETIC_TEST = 1000


def _shape_mask(cls: int, u, v):
    r = np.sqrt(u * u + v * v)
    inside = np.maximum(np.abs(u), np.abs(v)) < 0.6
    if cls == 0:
        return r < 0.5
    if cls == 1:
        return np.maximum(np.abs(u), np.abs(v)) < 0.42
    if cls == 2:
        return (v < 0.45) & (np.abs(u) < (v + 0.45) * 0.6)
    if cls == 3:
        return (r > 0.28) & (r < 0.52)
    if cls == 4:
        return inside & (np.sin(v * np.pi * 3.5) > 0)
    if cls == 5:
        return inside & (np.sin(u * np.pi * 3.5) > 0)
    if cls == 6:
        return ((np.abs(u) < 0.16) & (np.abs(v) < 0.55)) | ((np.abs(v) < 0.16) & (np.abs(u) < 0.55))
    if cls == 7:
        return inside & (np.sin(u * np.pi * 2.5) * np.sin(v * np.pi * 2.5) > 0)
    if cls == 8:
        return np.abs(u) + np.abs(v) < 0.55
    return (r < 0.6) & (np.sin((u + v) * np.pi * 2.5) > 0)


def make_synthetic(num: int, image_size: int, seed: int, num_classes: int = 10):
    """Deterministic class-structured images: per class a colour and a shape/texture,
    with per-example position, scale and colour jitter, random background and noise.
    Returns (uint8 [num, S, S, 3], int32 labels) with balanced classes in random order."""
    if not 1 <= num_classes <= len(SYNTHETIC_CLASSES):
        raise ValueError(f"synthetic supports 1..{len(SYNTHETIC_CLASSES)} classes. "
                         f"Received: num_classes={num_classes}")
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num) % num_classes).astype(np.int32)
    grid = (np.arange(image_size, dtype=np.float32) + 0.5) / image_size * 2.0 - 1.0
    yy, xx = np.meshgrid(grid, grid, indexing="ij")
    images = np.empty((num, image_size, image_size, 3), np.float32)
    cx = rng.uniform(-0.25, 0.25, num).astype(np.float32)
    cy = rng.uniform(-0.25, 0.25, num).astype(np.float32)
    scale = rng.uniform(0.75, 1.2, num).astype(np.float32)
    background = rng.uniform(0, 110, (num, 3)).astype(np.float32)
    fg_jitter = rng.uniform(-30, 30, (num, 3)).astype(np.float32)
    noise = rng.normal(0, 12, images.shape).astype(np.float32)
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if idx.size == 0:
            continue
        u = (xx[None] - cx[idx, None, None]) / scale[idx, None, None]
        v = (yy[None] - cy[idx, None, None]) / scale[idx, None, None]
        mask = _shape_mask(c, u, v)[..., None]
        fg = (_SYNTHETIC_COLOURS[c] + fg_jitter[idx])[:, None, None, :]
        bg = background[idx][:, None, None, :]
        images[idx] = np.where(mask, fg, bg)
    images += noise
    return np.clip(np.round(images), 0, 255).astype(np.uint8), labels


def _load_synthetic(image_size, max_train, max_test, seed) -> ImageDataset:
    size = int(image_size or 32)
    num_train = int(max_train or SYNTHETIC_TRAIN)
    num_test = int(max_test or SYNTHETIC_TEST)
    train_x, train_y = make_synthetic(num_train, size, seed=seed * 2 + 0)
    test_x, test_y = make_synthetic(num_test, size, seed=seed * 2 + 1)
    return from_arrays(train_x, train_y, test_x, test_y, SYNTHETIC_CLASSES)


# ---------------------------------------------------------------------------
# Image folder.
# ---------------------------------------------------------------------------

def _class_folders(split_dir: str):
    return sorted(e.name for e in os.scandir(split_dir)
                  if e.is_dir() and not e.name.startswith("."))


def _image_files(class_dir: str):
    return sorted(os.path.join(class_dir, e.name) for e in os.scandir(class_dir)
                  if e.is_file() and not e.name.startswith(".")
                  and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS)


def _list_split(root: str, split: str, classes: Sequence[str]):
    paths, labels = [], []
    for label, name in enumerate(classes):
        class_dir = os.path.join(root, split, name)
        files = _image_files(class_dir)
        if not files:
            raise ValueError(
                f"Class folder {class_dir} has no images (expected files ending in "
                f"{', '.join(IMAGE_EXTENSIONS)}, any case).")
        paths.extend(files)
        labels.extend([label] * len(files))
    return paths, np.asarray(labels, np.int32)


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


#: How many undecodable files an error message names (all are counted).
_BAD_FILES_NAMED = 5


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
    """``"N of M image files cannot be decoded: a (reason), b (reason), ... and K more"``."""
    named = ", ".join(f"{paths[i]} ({_decode_failure(paths[i])})"
                      for i in bad[:_BAD_FILES_NAMED])
    more = f", and {len(bad) - _BAD_FILES_NAMED} more" if len(bad) > _BAD_FILES_NAMED else ""
    return (f"{len(bad)} of {len(paths)} image files cannot be decoded: {named}{more}. "
            "Remove or replace them.")


def decode_images(paths: Sequence[str], image_size: Optional[int], batch: int = 1024) -> np.ndarray:
    """Decodes image files into one uint8 [N, S, S, 3] array with a parallel ``tf.data``
    map (files of another size are then resized: shorter side + centre crop).
    ``image_size`` None: the size of the first decodable image.

    Every file is checked in the same pass (a failing file is dropped with
    ``ignore_errors`` and its index noted): a ValueError counts all undecodable
    files and names the first few with the reason.
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
    parts = list(ds.batch(batch).with_options(options).as_numpy_iterator())
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


def _load_folder(root, image_size, max_train, max_test, seed) -> ImageDataset:
    if not root:
        raise ValueError("--dataset folder needs --data_dir PATH (a folder with "
                         "PATH/train/<class>/* and PATH/test/<class>/* images).")
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root} does not exist or is not a directory.")
    for split in ("train", "test"):
        if not os.path.isdir(os.path.join(root, split)):
            raise ValueError(f"Image folder {root} has no {split}/ sub-folder "
                             f"(missing {os.path.join(root, split)}). {FOLDER_HINT}")
    train_classes = _class_folders(os.path.join(root, "train"))
    test_classes = _class_folders(os.path.join(root, "test"))
    if not train_classes:
        raise ValueError(f"No images: {os.path.join(root, 'train')} has no class sub-folders. "
                         f"{FOLDER_HINT}")
    if len(train_classes) < 2:
        raise ValueError(
            f"{os.path.join(root, 'train')} has {len(train_classes)} class folder "
            f"({', '.join(train_classes)}); the linear probe and kNN need at least 2.")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise ValueError(
            f"train/ and test/ of {root} must have the same class folders. "
            f"Only in train: {only_train}; only in test: {only_test}.")
    splits = {}
    for split, limit, offset in (("train", max_train, 0), ("test", max_test, 1)):
        paths, labels = _list_split(root, split, train_classes)
        keep = subset_indices(len(paths), limit, seed + offset)
        images = decode_images([paths[i] for i in keep], image_size)
        splits[split] = (images, labels[keep])
    (train_x, train_y), (test_x, test_y) = splits["train"], splits["test"]
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"train and test images of {root} have different sizes "
            f"({train_x.shape[1:3]} vs {test_x.shape[1:3]}): pass image_size.")
    return from_arrays(train_x, train_y, test_x, test_y, train_classes)


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
    if not 1 <= num < data.num_train:
        raise ValueError(
            f"validation_examples must be between 1 and the number of train examples - 1 "
            f"({data.num_train - 1}). Received: validation_examples={num!r}")
    held_out = np.zeros(data.num_train, bool)
    held_out[subset_indices(data.num_train, num, seed + 3)] = True
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


def make_gaussian_views(num: int, dim: int, seed: int, sigma2: float = 0.5,
                        data_cov=None, aug_cov=None):
    """Two views of ``num`` flat vectors from the linear theory's data model (paper
    Sec. 3): ``xbar ~ N(0, X)``, ``x1 = xbar + e1``, ``x2 = xbar + e2``,
    ``e1, e2 ~ N(0, X')`` independent, so ``E[x1 x1^T] = X + X'`` and
    ``E[x1 x2^T] = X``. ``X = data_cov`` (default ``I``), ``X' = aug_cov``
    (default ``sigma2 I``). Seeded; returns float32 ``(x1, x2)`` of shape
    ``[num, dim]`` (``dataset="gaussian"``, ``backbone="linear"``)."""
    if int(num) < 1 or int(dim) < 1:
        raise ValueError("gaussian data needs num >= 1 and dim >= 1. "
                         f"Received: num={num!r}, dim={dim!r}")
    if sigma2 < 0:
        raise ValueError(f"gaussian data needs sigma2 >= 0. Received: sigma2={sigma2!r}")
    num, dim = int(num), int(dim)
    covs = []
    for field, cov, default in (("data_cov", data_cov, np.eye(dim)),
                                ("aug_cov", aug_cov, sigma2 * np.eye(dim))):
        cov = default if cov is None else np.asarray(cov, dtype=np.float64)
        if cov.shape != (dim, dim) or not np.allclose(cov, cov.T) or \
                np.linalg.eigvalsh(cov).min() < -1e-10:
            raise ValueError(f"gaussian {field} must be a symmetric positive semi-definite "
                             f"[{dim}, {dim}] matrix. Received: shape {cov.shape}")
        vals, vecs = np.linalg.eigh(cov)
        covs.append(vecs * np.sqrt(np.maximum(vals, 0.0)))  # cov = L L^T
    rng = np.random.default_rng(seed)
    xbar = rng.standard_normal((num, dim)) @ covs[0].T
    x1 = xbar + rng.standard_normal((num, dim)) @ covs[1].T
    x2 = xbar + rng.standard_normal((num, dim)) @ covs[1].T
    return x1.astype(np.float32), x2.astype(np.float32)


# ---------------------------------------------------------------------------
# Public entry points.
# ---------------------------------------------------------------------------

def load_dataset(name: str = "cifar10", *, data_dir: Optional[str] = None,
                 image_size: Optional[int] = None, max_train_examples: Optional[int] = None,
                 max_test_examples: Optional[int] = None, seed: int = 0,
                 download: bool = True, validation_examples: int = 0) -> ImageDataset:
    """Loads ``name`` (``synthetic``, ``folder`` or a tfds name) as an :class:`ImageDataset`.

    tfds data are read from ``data_dir`` (tfds default when None); an unprepared
    dataset is downloaded unless ``download=False``; any failure raises a
    ValueError explaining how to use a local image folder instead. With
    ``validation_examples`` > 0 the evaluation split is held out of the train
    split (:func:`hold_out_validation`) and the test split is not read.
    """
    name = str(name).strip()
    if validation_examples:
        if max_test_examples is not None:
            raise ValueError(
                "max_test_examples limits the test split, which a run with "
                f"validation_examples={validation_examples} does not use. "
                f"Received: max_test_examples={max_test_examples!r}")
        data = load_dataset(name, data_dir=data_dir, image_size=image_size,
                            max_train_examples=max_train_examples, max_test_examples=1,
                            seed=seed, download=download)
        return hold_out_validation(data, int(validation_examples), seed)
    for field, value in (("image_size", image_size), ("max_train_examples", max_train_examples),
                         ("max_test_examples", max_test_examples)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{field} must be None or >= 1. Received: {field}={value!r}")
    if name == "gaussian":
        raise ValueError("dataset='gaussian' is the linear theory's vector data, sampled "
                         "in pairs of views by make_gaussian_views (experiments/theory/"
                         "package_run.py trains on it); it has no images for this "
                         "pipeline. Received: name='gaussian'")
    if name == "synthetic":
        data = _load_synthetic(image_size, max_train_examples, max_test_examples, seed)
    elif name == "folder":
        data = _load_folder(data_dir, image_size, max_train_examples, max_test_examples, seed)
    else:
        data = _load_tfds(name, data_dir, image_size, max_train_examples, max_test_examples,
                          seed, download)
    if data.num_classes < 2:
        raise ValueError(f"Dataset {name!r} has {data.num_classes} class; the linear probe "
                         "and kNN need at least 2.")
    return data


def load_dataset_from_config(config) -> ImageDataset:
    """:func:`load_dataset` with the data fields of a :class:`config.Config`."""
    return load_dataset(config.dataset, data_dir=config.data_dir, image_size=config.image_size,
                        max_train_examples=config.max_train_examples,
                        max_test_examples=config.max_test_examples, seed=config.seed,
                        validation_examples=config.validation_examples)
