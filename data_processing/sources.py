"""Where a dataset's images come from, with no TensorFlow: the seeded subsets, the
synthetic images, the image-folder listing and its checks, and the linear theory's
Gaussian vectors. Shared by the tf.data pipelines (``datasets.py``) and the
in-memory arrays of the JAX backend (``arrays.py``)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional, Sequence

import numpy as np

@dataclasses.dataclass(frozen=True)
class Dataset:
    """One dataset's splits and what describes them, in either input path's form:
    ``pretrain`` the pre-training images (no labels); ``train`` / ``test`` ``(uint8 image,
    int32 label)`` for the probe and kNN. :class:`datasets.ImageDataset`: unbatched tf.data
    pipelines; :class:`arrays.ArrayDataset`: uint8 ``[N, S, S, 3]`` arrays."""

    pretrain: Any
    train: Any
    test: Any
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


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")

FOLDER_HINT = (
    "To train on a local copy instead, use an image folder: "
    "--dataset folder --data_dir PATH with PATH/train/<class>/*.jpg|png and "
    "PATH/test/<class>/*.jpg|png (the same class folders in both).")


def subset_indices(num: int, max_examples: Optional[int], seed: int) -> np.ndarray:
    """Indices of a deterministic subset: a seeded permutation, first ``max_examples``,
    returned sorted (original order). All indices when ``max_examples`` is None or >= num."""
    if max_examples is None or max_examples >= num:
        return np.arange(num)
    if max_examples < 1:
        raise ValueError(f"max_examples must be >= 1. Received: {max_examples!r}")
    perm = np.random.default_rng(seed).permutation(num)
    return np.sort(perm[:max_examples])



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


def folder_splits(root, max_train, max_test, seed):
    """Checks an image folder ``ROOT/{train,test}/<class>/*`` and lists it: returns
    ``(class_names, {"train": (paths, labels), "test": (paths, labels)})`` with the
    seeded ``max_*`` subsets applied. Every check runs before any file is decoded."""
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
        splits[split] = ([paths[i] for i in keep], labels[keep])
    return train_classes, splits


def split_progress(progress, split):
    """``progress(split, done, total)`` as the ``(done, total)`` callback of one split."""
    if progress is None:
        return None
    return lambda done, total: progress(split, done, total)


def check_same_size(root, train_x, test_x):
    if train_x.shape[1:] != test_x.shape[1:]:
        raise ValueError(
            f"train and test images of {root} have different sizes "
            f"({train_x.shape[1:3]} vs {test_x.shape[1:3]}): pass image_size.")


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


#: How many undecodable files an error message names (all are counted).
BAD_FILES_NAMED = 5


def undecodable_message(paths, bad, reason):
    """``"N of M image files cannot be decoded: a (reason), b (reason), ... and K more"``;
    ``reason(path)`` says why one file fails (only the few named are asked)."""
    named = ", ".join(f"{paths[i]} ({reason(paths[i])})" for i in bad[:BAD_FILES_NAMED])
    more = f", and {len(bad) - BAD_FILES_NAMED} more" if len(bad) > BAD_FILES_NAMED else ""
    return (f"{len(bad)} of {len(paths)} image files cannot be decoded: {named}{more}. "
            "Remove or replace them.")


def check_load_args(name, image_size, max_train_examples, max_test_examples,
                    validation_examples):
    """The checks of ``load_dataset``'s arguments that need no data; returns the name."""
    name = str(name).strip()
    if validation_examples and max_test_examples is not None:
        raise ValueError(
            "max_test_examples limits the test split, which a run with "
            f"validation_examples={validation_examples} does not use. "
            f"Received: max_test_examples={max_test_examples!r}")
    for field, value in (("image_size", image_size), ("max_train_examples", max_train_examples),
                         ("max_test_examples", max_test_examples)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{field} must be None or >= 1. Received: {field}={value!r}")
    if name == "gaussian":
        raise ValueError("dataset='gaussian' is the linear theory's vector data, sampled "
                         "in pairs of views by make_gaussian_views (experiments/theory/"
                         "package_run.py trains on it); it has no images for this "
                         "pipeline. Received: name='gaussian'")
    return name


def check_classes(name, num_classes):
    if num_classes < 2:
        raise ValueError(f"Dataset {name!r} has {num_classes} class; the linear probe "
                         "and kNN need at least 2.")


def held_out_mask(num_train, num, seed):
    """Which train examples ``validation_examples=num`` holds out (a seeded subset)."""
    if not 1 <= num < num_train:
        raise ValueError(
            f"validation_examples must be between 1 and the number of train examples - 1 "
            f"({num_train - 1}). Received: validation_examples={num!r}")
    held_out = np.zeros(num_train, bool)
    held_out[subset_indices(num_train, num, seed + 3)] = True
    return held_out


def synthetic_splits(image_size, max_train, max_test, seed):
    """``(train_x, train_y, test_x, test_y)`` of the ``synthetic`` dataset."""
    size = int(image_size or 32)
    train = make_synthetic(int(max_train or SYNTHETIC_TRAIN), size, seed=seed * 2 + 0)
    test = make_synthetic(int(max_test or SYNTHETIC_TEST), size, seed=seed * 2 + 1)
    return (*train, *test)


def load_args(config):
    """The keyword arguments of ``load_dataset`` (either input path) from a Config."""
    return dict(data_dir=config.data_dir, image_size=config.image_size,
                max_train_examples=config.max_train_examples,
                max_test_examples=config.max_test_examples, seed=config.seed,
                validation_examples=config.validation_examples)


def check_pretraining_args(config, num, epoch, stop_epoch):
    """The checks of ``pretraining_dataset`` (either input path); returns
    ``(batch_size, first_epoch, stop_epoch)``."""
    batch = int(config.batch_size)
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
    return batch, epoch, epoch + 1 if stop_epoch is None else int(stop_epoch)


# ---- the seeds of (seed, epoch, step) ----------------------------------------------------
# Every pre-training batch is a function of (seed, epoch, step) only, so that a resumed run
# sees what the uninterrupted one saw. The two input paths draw with different generators
# (a tf.data shuffle and stateless tf.random; NumPy's PCG64), so they keep a scheme each:
# one scheme for both would change the random stream of one of them.

#: TensorFlow scheme: the shuffle seed of epoch e is ``seed * EPOCH_SEEDS + e``, the
#: stateless seed of step s ``(seed + 1, e * STEP_SEEDS + s)``; distinct for any real run.
EPOCH_SEEDS = 1_000_003
STEP_SEEDS = 1 << 24


def tf_data_seeds(seed, epoch, step=0):
    """The TensorFlow input path's seeds of ``(seed, epoch, step)``: ``(shuffle seed,
    (first, second))``, the ``tf.data`` shuffle seed of the epoch and the
    ``tf.random.stateless_uniform`` seed pair of the step's views. ``epoch`` and ``step``
    may be integer tensors (inside a ``tf.data`` map); ``seed`` is a Python int."""
    return seed * EPOCH_SEEDS + epoch, (seed + 1, epoch * STEP_SEEDS + step)


def numpy_seeds(seed, epoch, step=0):
    """The NumPy input path's seeds of ``(seed, epoch, step)`` (the JAX backend's arrays,
    the evaluation protocols' fine-tuning): ``(order, views)``, the
    ``np.random.default_rng`` entropy of the epoch's permutation and of the step's
    augmentation uniforms."""
    return [seed, epoch], [seed + 1, epoch, step]
