"""Input pipeline: datasets (tfds, image folder, synthetic) and batched SSL augmentation."""

from data_processing.augmentations import (AugmentParams, augment_batch, eval_transform,
                                           evaluation_dataset, pretraining_dataset)
from data_processing.datasets import ImageDataset, load_dataset, load_dataset_from_config

__all__ = [
    "AugmentParams", "augment_batch", "eval_transform", "evaluation_dataset",
    "pretraining_dataset", "ImageDataset", "load_dataset", "load_dataset_from_config",
]
