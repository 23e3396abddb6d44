"""In-memory input for the JAX backend: uint8 NumPy arrays, no TensorFlow.

The same datasets, checks and batch semantics as the tf.data pipeline
(``datasets.py``, ``augmentations.py``) for what can work without TensorFlow:

* ``synthetic`` (NumPy) and ``folder`` (``ROOT/{train,test}/<class>/*``, decoded
  once with Pillow, resized like ``datasets._fit_image``: shorter side, bilinear
  with Pillow's antialiasing, centre crop); tfds names need TensorFlow and are
  refused by :func:`backends.jax.check_run`.
* :func:`pretraining_dataset`: the batches of epochs ``epoch .. stop_epoch - 1``
  back to back, each a function of (seed, epoch, step): the order of epoch e is a
  permutation seeded by (seed, e) and host-side views use uniforms seeded by
  (seed, e, s) (:func:`sources.numpy_seeds`). The draws are NumPy's, so a JAX run sees
  other (equally seeded) batches than a TensorFlow run of the same config.
* :func:`evaluation_dataset`: ``(eval_transform(images), labels)`` batches in order.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import Optional, Sequence

import numpy as np

from data_processing import sources


class ArrayDataset(sources.Dataset):
    """The arrays of one dataset (:class:`sources.Dataset`): ``pretrain`` uint8
    ``[N, S, S, 3]``; ``train`` / ``test`` ``(uint8 images, int32 labels)``."""


def from_arrays(train_x, train_y, test_x, test_y, class_names) -> ArrayDataset:
    train_x, test_x = np.asarray(train_x, np.uint8), np.asarray(test_x, np.uint8)
    return ArrayDataset(
        pretrain=train_x, train=(train_x, np.asarray(train_y, np.int32)),
        test=(test_x, np.asarray(test_y, np.int32)), num_classes=len(class_names),
        class_names=tuple(class_names), image_size=int(train_x.shape[1]),
        num_pretrain=len(train_x), num_train=len(train_x), num_test=len(test_x))


# ---------------------------------------------------------------------------
# Image files (Pillow).
# ---------------------------------------------------------------------------

def _decode_file(path, size):
    """uint8 [S, S, 3] of one file: RGB, shorter side to ``size`` and centre crop."""
    from PIL import Image
    with Image.open(path) as image:
        image = image.convert("RGB")
        if size is not None and image.size != (size, size):
            w, h = image.size
            scale = size / min(h, w)
            new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
            image = image.resize((new_w, new_h), Image.BILINEAR)
            top, left = (new_h - size) // 2, (new_w - size) // 2
            image = image.crop((left, top, left + size, top + size))
        return np.asarray(image, np.uint8)


def _decode_failure(path):
    try:
        if os.path.getsize(path) == 0:
            return "empty file"
        _decode_file(path, None)
    except Exception as error:  # Pillow raises several types for a broken file
        return (str(error).splitlines() or ["undecodable"])[0][:100]
    return "decodes on its own; failed in the batch"


def _first_size(paths):
    """The size of the first decodable image, which must be square."""
    for path in paths:
        try:
            first = _decode_file(path, None)
        except Exception:  # noqa: BLE001 -- counted and named by the full pass
            continue
        if first.shape[0] != first.shape[1]:
            raise ValueError(f"Image {path} is {first.shape[0]}x{first.shape[1]}, not "
                             "square: pass image_size to resize and centre-crop the images.")
        return int(first.shape[0])
    raise ValueError(sources.undecodable_message(paths, list(range(len(paths))),
                                                 _decode_failure))


def decode_images(paths: Sequence[str], image_size: Optional[int], progress=None,
                  chunk: int = 1024) -> np.ndarray:
    """Decodes image files into one uint8 [N, S, S, 3] array (threads over files),
    as :func:`datasets.decode_images`: ``image_size`` None is the size of the first
    decodable image (square), and files of another size are resized to it. Every
    file is tried; a ValueError counts all undecodable files and names a few.
    ``progress(done, total)``, if given, is called after every ``chunk`` files."""
    paths = list(paths)
    if not paths:
        raise ValueError("No image files to decode.")
    size = _first_size(paths) if image_size is None else image_size

    def decode(path):
        try:
            return _decode_file(path, size)
        except Exception:  # noqa: BLE001 -- counted and named below
            return None

    images = []
    with concurrent.futures.ThreadPoolExecutor(max(1, os.cpu_count() or 1)) as pool:
        for start in range(0, len(paths), chunk):
            images += pool.map(decode, paths[start:start + chunk], chunksize=64)
            if progress is not None:
                progress(len(images), len(paths))
    bad = [i for i, image in enumerate(images) if image is None]
    if bad:
        raise ValueError(sources.undecodable_message(paths, bad, _decode_failure))
    return np.stack(images)


def _load_folder(root, image_size, max_train, max_test, seed, progress=None) -> ArrayDataset:
    classes, splits = sources.folder_splits(root, max_train, max_test, seed)
    train_x = decode_images(splits["train"][0], image_size,
                            sources.split_progress(progress, "train"))
    test_x = decode_images(splits["test"][0], image_size,
                           sources.split_progress(progress, "test"))
    sources.check_same_size(root, train_x, test_x)
    return from_arrays(train_x, splits["train"][1], test_x, splits["test"][1], classes)


#: The datasets this module reads (the others are tfds names: TensorFlow).
NAMES = ("synthetic", "folder")


def load_dataset(name="synthetic", *, data_dir=None, image_size=None,
                 max_train_examples=None, max_test_examples=None, seed=0,
                 validation_examples=0, progress=None) -> ArrayDataset:
    """:func:`datasets.load_dataset` for ``synthetic`` and ``folder``, as arrays."""
    name = sources.check_load_args(name, image_size, max_train_examples, max_test_examples,
                                   validation_examples)
    if name not in NAMES:
        raise ValueError(f"dataset {name!r} is read through tensorflow-datasets, which the "
                         f"JAX backend does not use; valid here: {list(NAMES)} (a "
                         f"local copy as an image folder: {sources.FOLDER_HINT})")
    if validation_examples:
        data = load_dataset(name, data_dir=data_dir, image_size=image_size,
                            max_train_examples=max_train_examples, max_test_examples=1,
                            seed=seed, progress=progress)
        held_out = sources.held_out_mask(data.num_train, int(validation_examples), seed)
        x, y = data.train
        return dataclasses.replace(
            from_arrays(x[~held_out], y[~held_out], x[held_out], y[held_out],
                        data.class_names), eval_split="validation")
    if name == "synthetic":
        data = from_arrays(*sources.synthetic_splits(image_size, max_train_examples,
                                                     max_test_examples, seed),
                           sources.SYNTHETIC_CLASSES)
    else:
        data = _load_folder(data_dir, image_size, max_train_examples, max_test_examples, seed,
                            progress)
    sources.check_classes(name, data.num_classes)
    return data


def load_dataset_from_config(config, progress=None) -> ArrayDataset:
    return load_dataset(config.dataset, **sources.load_args(config), progress=progress)


# ---------------------------------------------------------------------------
# Batches.
# ---------------------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _jitted(kind, params):
    """The keras.ops recipe of ``data_processing.augment_ops``, compiled once per params."""
    import jax

    from data_processing import augment_ops
    if kind == "augment":
        return jax.jit(lambda images, u: augment_ops.augment_from_uniforms(images, u, params))
    return jax.jit(lambda images: augment_ops.eval_transform(images, params))


def pretraining_dataset(data: ArrayDataset, config, *, with_labels=False, epoch=0,
                        stop_epoch=None, shuffle=True):
    """A generator of the pre-training batches of epochs ``epoch .. stop_epoch - 1``
    (one epoch without ``stop_epoch``; ``drop_remainder``), as
    :func:`augmentations.pretraining_dataset`: ``(view1, view2)`` float32 pairs with
    ``augment_on="host"``, raw uint8 batches with ``"device"``; with labels
    ``((view1, view2), labels)`` / ``(images, labels)``."""
    from data_processing.augment_ops import NUM_UNIFORMS, AugmentParams
    images, labels = data.train if with_labels else (data.pretrain, None)
    num = len(images)
    batch, epoch, last = sources.check_pretraining_args(config, num, epoch, stop_epoch)
    seed, steps = int(config.seed), num // batch
    augment = None
    if config.augment_on == "host":
        augment = _jitted("augment", AugmentParams.from_config(config))

    def batches():
        for e in range(epoch, last):
            order_seed, _ = sources.numpy_seeds(seed, e)
            order = (np.random.default_rng(order_seed).permutation(num) if shuffle
                     else np.arange(num))
            for s in range(steps):
                index = order[s * batch:(s + 1) * batch]
                x = images[index]
                if augment is not None:
                    u = np.random.default_rng(sources.numpy_seeds(seed, e, s)[1]).random(
                        (2 * batch, NUM_UNIFORMS), np.float32)
                    views = augment(np.concatenate([x, x]), u)
                    x = (views[:batch], views[batch:])
                if labels is not None:
                    yield x, labels[index]
                elif augment is not None:
                    yield x  # (view1, view2)
                else:
                    yield (x,)  # Keras takes tuples from a generator: (images,)

    return batches()


def _eval_transform(config):
    from data_processing.augment_ops import AugmentParams
    return _jitted("eval", AugmentParams.from_config(config))


class _EvaluationBatches:
    """Re-iterable ``(eval_transform(images), labels)`` batches, in order."""

    def __init__(self, split, transform, batch):
        self.images, self.labels = split
        self.transform, self.batch = transform, batch

    def __iter__(self):
        for start in range(0, len(self.images), self.batch):
            stop = start + self.batch
            yield self.transform(self.images[start:stop]), self.labels[start:stop]


def evaluation_dataset(split, config, batch_size=None):
    """``(eval_transform(images), labels)`` batches of ``split = (images, labels)``
    (re-iterable, last batch kept); ``batch_size`` defaults to ``config.batch_size``."""
    return _EvaluationBatches(split, _eval_transform(config),
                              int(batch_size or config.batch_size))


def probe_images(data: ArrayDataset, config, num):
    """The first ``num`` train images, eval-transformed (the eigenspace probe batch)."""
    return _eval_transform(config)(data.train[0][:num])
