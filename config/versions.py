"""Older config.json formats read as the current one (:func:`upgrade`).

Version 2: every option a run does not use is refused. Version 3: the network constants
(``weight_init``, ``bn_epsilon``, ``bn_momentum``, ``predictor_bn_affine``),
``predictor_trained_between`` and ``probe_protocol`` are fields. Version 1 options the run
did not use are reset to their defaults, and the fields new in version 3 get the values the
package used before them, so an old config.json still describes the run that wrote it.
Version 4: ``directcopy_norm`` (a version-3 DirectCopy run keeps the Frobenius norm it ran).
"""

from __future__ import annotations

import types
import warnings

from config.methods import unused_options

#: Format of config.json written by this package.
CONFIG_VERSION = 4

#: Per version: the fields it added, with the value every run before them had, so that an
#: older config.json read today still describes (and re-runs) the run that wrote it.
_NEW_FIELDS = {
    3: dict(weight_init="keras", bn_epsilon=1e-3, bn_momentum=0.99, predictor_bn_affine=True,
            predictor_trained_between=False, probe_protocol="official"),
    4: dict(directcopy_norm="frobenius"),
}
#: Why the values kept differ from today's factories, by version.
_WHY = {3: "today's factories use PyTorch's initialisers and BN constants and train a "
           "freq > 1 DirectPred predictor between recomputations, as the official code",
        4: "today's DirectCopy divides F by its top eigenvalue"}
#: Defaults that version 3 changed (an older file holds the old one where the run ignored it).
_DEFAULTS_BEFORE_VERSION_3 = dict(target_init="copy")


def upgrade(values: dict, defaults: dict, rules) -> dict:
    """An older config dict in the current format, with one warning naming what changed.

    Version 1: options the run did not use are reset (:func:`_from_version_1`). Every older
    version: the fields added after it get the value its run had (:data:`_NEW_FIELDS`) where
    the run used them, and every option the run did not use takes today's default (version
    2 on refused anything else there, so nothing the run did changes). ``defaults``: the
    Config field defaults; ``rules``: who uses which option (``config.OPTION_RULES``)."""
    version = values.get("version")
    if version not in (1, 2, 3):
        return values
    notes = []
    if version == 1:
        values, ignored = _from_version_1(values, defaults, rules)
        if ignored:
            notes.append("options the run did not use are reset to their defaults: "
                         + ", ".join(ignored))
    added = [v for v in sorted(_NEW_FIELDS) if v > max(version, 2)]
    new = {field: value for v in added for field, value in _NEW_FIELDS[v].items()}
    values = {**new, **values, "version": CONFIG_VERSION}
    view = types.SimpleNamespace(**{**defaults, **values})
    for field, _ in unused_options(view, rules):
        values[field] = defaults[field]
    kept = [f"{field}={values[field]!r}" for field in new if values[field] != defaults[field]]
    if kept:
        why = [_WHY[v] for v in added if any(values[f] != defaults[f] for f in _NEW_FIELDS[v])]
        since = (f"version {added[0]}" if len(added) == 1
                 else f"versions {', '.join(map(str, added[:-1]))} and {added[-1]}")
        notes.append(f"fields new in {since} keep the values "
                     f"the run had ({', '.join(kept)}); " + "; ".join(why)
                     + " (docs/recipes.md)")
    if notes:
        warnings.warn(f"config.json of version {version}: " + "; ".join(notes), stacklevel=3)
    return values


def _from_version_1(values: dict, defaults: dict, rules):
    """A version-1 config dict as version 2, and the options it resets: version 1 accepted
    options the run did not use and ignored them; they are reset to their defaults here
    (so the Config says what ran)."""
    values = dict(values)
    old = {**defaults, **_DEFAULTS_BEFORE_VERSION_3}
    view = types.SimpleNamespace(**{**old, **values})
    ignored = []
    for field, _ in unused_options(view, rules):
        if field in values and to_tuple(values[field]) != old[field]:
            ignored.append(f"{field}={values[field]!r}")
            values[field] = defaults[field]
    return values, ignored


def to_tuple(value):
    """JSON lists back as the tuples of the tuple fields."""
    return tuple(value) if isinstance(value, list) else value
