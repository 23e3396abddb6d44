"""``FIELD=VALUE`` from a command line, typed as the Config field is (``train.py --set``,
``reproduce_small.py --override``)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Tuple

from config.core import Config


def _parse_scalar(kind: str, text: str):
    if kind == "str":
        return text
    if kind == "bool":
        if text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise ValueError("true or false")
    return {"int": int, "float": float}[kind](text)


def parse_assignment(text: str) -> Tuple[str, object]:
    """``"FIELD=VALUE"`` -> ``(FIELD, value)``, the value typed as the :class:`Config` field
    is: ``predictor_eps=0.05``, ``corr_center=true``, ``predictor_weight_decay=none`` (an
    ``Optional`` field), ``crop_scale=0.2,1.0`` (a tuple, comma-separated). Range checks
    stay with ``Config`` itself."""
    name, sep, raw = text.partition("=")
    kinds = {f.name: f.type for f in dataclasses.fields(Config)}
    if not sep or name not in kinds:
        close = difflib.get_close_matches(name, list(kinds), n=1, cutoff=0.6) if sep else []
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Expected FIELD=VALUE with a Config field.{hint} Received: "
                         f"{text!r}. Valid fields: {sorted(kinds)}")
    kind = kinds[name]
    if kind.startswith("Optional["):
        if raw.lower() == "none":
            return name, None
        kind = kind[len("Optional["):-1]
    try:
        if kind.startswith("Tuple["):
            item_kinds, parts = kind[len("Tuple["):-1].split(", "), raw.split(",")
            if len(parts) != len(item_kinds):
                raise ValueError(f"{len(item_kinds)} comma-separated values")
            return name, tuple(_parse_scalar(k, p) for k, p in zip(item_kinds, parts))
        return name, _parse_scalar(kind, raw)
    except ValueError as error:
        raise ValueError(f"Config.{name} takes a value of type {kinds[name]}. Received: "
                         f"{name}={raw!r}") from error
