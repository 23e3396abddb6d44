"""Input pipeline: datasets (tfds, image folder, synthetic) and batched SSL augmentation.

The names below are imported lazily (PEP 562), so that the backend-agnostic
:mod:`data_processing.augment_ops`, :mod:`~data_processing.sources` and
:mod:`~data_processing.arrays` import without TensorFlow (the JAX train step
uses it); :mod:`~data_processing.augmentations` (tf.data, ``tf.random``) and
:mod:`~data_processing.datasets` (tfds) import TensorFlow when first used.
"""

import importlib

_EXPORTS = {
    "AugmentParams": "augment_ops",
    "augment_from_uniforms": "augment_ops",
    "eval_transform": "augment_ops",
    "augment_batch": "augmentations",
    "evaluation_dataset": "augmentations",
    "pretraining_dataset": "augmentations",
    "ImageDataset": "datasets",
    "load_dataset": "datasets",
    "load_dataset_from_config": "datasets",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"data_processing.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'data_processing' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
