"""Dataset presets: the Config fields a dataset needs unless the user sets them.

Applied explicitly, by :func:`with_dataset` (``get_config(NAME, dataset=...)`` and
``train.py --dataset`` go through it); ``Config.replace`` never applies one.
"""

from __future__ import annotations

#: STL-10 at 96 px with the official code's STL recipe (luckmatters ``data/transforms.py``):
#: jitter 0.8/0.8/0.8/0.2, a Gaussian blur (kernel int(0.1 * 96) = 9, sigma U(0.1, 2)) on
#: every view, and no normalisation (``ToTensor`` only).
_LARGE_IMAGE_RECIPE = dict(image_size=96, jitter=(0.8, 0.8, 0.8, 0.2), blur_prob=1.0,
                           blur_kernel_size=9, normalize_mean=(0.0, 0.0, 0.0),
                           normalize_std=(1.0, 1.0, 1.0))
DATASET_PRESETS = {"stl10": _LARGE_IMAGE_RECIPE, "tf_flowers": _LARGE_IMAGE_RECIPE}


def dataset_preset(dataset: str) -> dict:
    """Field values a dataset implies (empty for CIFAR-sized data)."""
    return dict(DATASET_PRESETS.get(dataset, {}))


def with_dataset(config, dataset: str, **changes):
    """``config`` moved to ``dataset``: that dataset's preset, except the fields given in
    ``changes``, then ``changes`` (e.g. STL-10 at 96 px with blur; ``image_size=64`` keeps
    64)."""
    return config.replace(**{**dataset_preset(dataset), **changes, "dataset": dataset})
