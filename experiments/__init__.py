"""Experiments: training runs, evaluation protocols, figures.

The public names below are imported lazily (PEP 562), so that ``test.py --help`` and the
config tools import no Keras::

    from experiments import load_encoder, export_encoder, evaluate_protocol
"""

import importlib

_EXPORTS = {
    "load_encoder": "pretrained",
    "export_encoder": "pretrained",
    "evaluate_protocol": "protocols",
    "labelled_subset": "protocols",
    "read_evaluations": "protocols",
    "train": "training",
    "evaluate": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"experiments.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
