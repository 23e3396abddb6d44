"""Input pipeline: datasets (tfds, image folder, synthetic) and batched SSL augmentation.

The tf.data names below are imported on first use, so that the TensorFlow-free
modules (``sources``, ``arrays``, ``augment_ops``) import without TensorFlow.
"""

_EXPORTS = {
    "AugmentParams": "augmentations", "augment_batch": "augmentations",
    "eval_transform": "augmentations", "evaluation_dataset": "augmentations",
    "pretraining_dataset": "augmentations", "ImageDataset": "datasets",
    "load_dataset": "datasets", "load_dataset_from_config": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'data_processing' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"data_processing.{_EXPORTS[name]}"), name)
