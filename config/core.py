"""The flat :class:`Config`: every group of :mod:`config.groups` in one frozen dataclass.

Each group checks its own fields; Config adds what spans groups: the linear theory's
encoder-and-data pair, the method's own checks, the options no part of the run uses
(:data:`OPTION_RULES`) and the format version. Defaults are the published CIFAR-10 recipe of
the official DirectPred code (facebookresearch/luckmatters ``ssl/real-dataset``): ResNet-18,
SGD lr 0.03, momentum 0.9, L2 weight decay 4e-4, batch 128, 100 epochs.
"""

from __future__ import annotations

import dataclasses
import json

from config import methods
from config.groups import (GROUPS, AugmentParams, Data, Encoder, Monitors, Numerics, Objective,
                           Optimisation, Predictor, Probe, Projector, Target)
from config.versions import CONFIG_VERSION, to_tuple, upgrade

#: Who uses each option that only some runs use (:class:`config.methods.Uses`): the methods
#: and predictors (:mod:`config.methods`), then each group's own switches. A field set away
#: from its default where none of its users is active is a ``ValueError`` naming the field
#: and the run: an option accepted and ignored would make a saved config.json lie.
OPTION_RULES = methods.RULES + tuple(rule for group in GROUPS for rule in group.CONDITIONAL)


@dataclasses.dataclass(frozen=True)
class Config(Numerics, Monitors, Probe, Optimisation, Predictor, Target, Objective, Projector,
             Encoder, AugmentParams, Data):
    """Every hyper-parameter of one pre-training + linear-evaluation run: the fields of
    every group of :mod:`config.groups`, flat (``config.flip_prob``). ``replace`` gives a
    modified copy; construction validates every field and raises a one-line ``ValueError``
    naming the bad value."""

    name: str = "byol"
    version: int = CONFIG_VERSION

    def __post_init__(self):
        for group in GROUPS:
            group._validate(self)
        # The linear theory (experiments/theory): linear backbone, gaussian data.
        if (self.backbone == "linear") != (self.dataset == "gaussian"):
            raise ValueError("backbone='linear' and dataset='gaussian' (flat vectors of "
                             "length image_size) go together. Received: "
                             f"backbone={self.backbone!r}, dataset={self.dataset!r}")
        check = methods.METHOD_SPECS[self.method].check
        if check:
            check(self)
        for field, who in methods.unused_options(self, OPTION_RULES):
            if getattr(self, field) != _FIELD_DEFAULTS[field]:
                raise ValueError(
                    f"Config.{field} applies to {who} only; this run would ignore it "
                    f"({self.describe()}). Received: {field}={getattr(self, field)!r}")
        if self.version != CONFIG_VERSION:
            raise ValueError(
                f"Config version {self.version} is not supported by this package "
                f"(which writes version {CONFIG_VERSION} and reads 1 to {CONFIG_VERSION}). "
                f"Received: version={self.version!r}")

    def describe(self) -> str:
        """``method='noncontrastive', predictor='directpred', ema_tau=0.996``: what picks
        the variant (named in error messages)."""
        parts = [f"method={self.method!r}"]
        if self.method == "noncontrastive":
            parts += [f"predictor={self.predictor!r}", f"ema_tau={self.ema_tau!r}"]
        parts.append(f"optimizer={self.optimizer!r}")
        return ", ".join(parts)

    # ---- derived ----------------------------------------------------------
    @property
    def uses_ema(self) -> bool:
        """True for a BYOL-style EMA target; False for SimSiam's stop-gradient."""
        return self.ema_tau > 0.0

    @property
    def computed_predictor(self) -> bool:
        """True when Wp is set from F (DirectPred / DirectCopy), not trained."""
        return self.predictor in methods.COMPUTED_PREDICTORS

    @property
    def resolved_stem(self) -> str:
        """``cifar`` (3x3 stride-1, no max-pool) up to 64 px, else ``imagenet``."""
        if self.stem != "auto":
            return self.stem
        return "cifar" if self.image_size <= 64 else "imagenet"

    # ---- (de)serialisation ------------------------------------------------
    def replace(self, **changes) -> "Config":
        """A modified copy (no preset: :func:`config.with_dataset` moves to a dataset)."""
        unknown = sorted(set(changes) - set(_FIELD_DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown Config field(s) {unknown}. "
                             f"Valid fields: {list(_FIELD_DEFAULTS)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Config":
        """A Config from its dict form (config.json), of the current format or of an older
        one (:func:`config.versions.upgrade`: a warning names what it filled in or reset)."""
        values = upgrade(values, _FIELD_DEFAULTS, OPTION_RULES)
        unknown = sorted(set(values) - set(_FIELD_DEFAULTS))
        if unknown:
            raise ValueError(f"Unknown Config field(s) {unknown}. "
                             f"Valid fields: {list(_FIELD_DEFAULTS)}")
        return cls(**{key: to_tuple(value) for key, value in values.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        return cls.from_dict(json.loads(text))


#: Field defaults, against which :data:`OPTION_RULES` tell a set option.
_FIELD_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Config)}
