"""Experiments: training runs, evaluation protocols, figures.

The public names below are imported lazily (PEP 562), so that ``test.py --help`` and the
config tools import no Keras::

    from experiments import load_encoder, export_encoder, evaluate_protocol
"""

import importlib

#: Each public name by the module of this package that defines it.
_HOME = {**dict.fromkeys(("load_encoder", "export_encoder"), "pretrained"),
         **dict.fromkeys(("evaluate_protocol", "labelled_subset", "read_evaluations"),
                         "protocols"),
         **dict.fromkeys(("train", "evaluate"), "training")}

__all__ = sorted(_HOME)


def __getattr__(name):  # PEP 562: the module is imported on first use of the name
    if name not in _HOME:
        raise AttributeError(f"module 'experiments' has no attribute {name!r}")
    return getattr(importlib.import_module(f"experiments.{_HOME[name]}"), name)
