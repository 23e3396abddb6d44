"""docs/recipes.md is the recipe card of the paper's rows: every ``field=value`` in the
**ours** column of its tables is what the factories named in the table's heading set."""

import os
import re

import pytest

import config as config_lib
from config import get_config

CARD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                    "recipes.md")
_FIELDS = {f for f in config_lib.Config.__dataclass_fields__}


def card_entries():
    """``(factory, field, value text)`` of every ``field=value`` in an **ours** cell."""
    factories, entries = [], []
    with open(CARD) as f:
        for line in f:
            if line.startswith("#"):
                factories = [n for n in re.findall(r"`([a-z_0-9]+)`", line)
                             if n in config_lib.FACTORIES]
            elif line.startswith("|") and factories:
                cells = [c.strip() for c in line.strip().strip("|").split("|")]
                if len(cells) < 2:
                    continue
                for item in re.findall(r"`([a-z_0-9]+=[^`]*)`", cells[1]):
                    field = item.split("=", 1)[0]
                    if field in _FIELDS:
                        entries.extend((name, field, item) for name in factories)
    return entries


def test_the_card_covers_every_paper_row_and_its_key_knobs():
    entries = card_entries()
    covered = {(name, field) for name, field, _ in entries}
    for name in ("byol", "simsiam", "direct_pred", "direct_pred_freq_5", "byol_baseline",
                 "eigenspace_experiment", "simsiam_baseline", "simsiam_baseline_symmetric",
                 "direct_copy"):
        for field in ("learning_rate", "weight_decay", "weight_init", "bn_epsilon",
                      "normalize_std", "epochs_pretraining"):
            assert (name, field) in covered, (name, field)
    for name in ("direct_pred", "direct_pred_freq_5"):
        for field in ("predictor_eps", "corr_rho", "predictor_freq", "target_init"):
            assert (name, field) in covered, (name, field)
    assert ("direct_pred_freq_5", "predictor_trained_between") in covered
    assert ("byol_baseline", "symmetry") in covered


@pytest.mark.parametrize("name, field, item", card_entries())
def test_factory_matches_the_card(name, field, item):
    _, value = config_lib.parse_assignment(item)
    assert getattr(get_config(name), field) == value, (
        f"{name}: the factory sets {field}={getattr(get_config(name), field)!r}, "
        f"docs/recipes.md says {item}")


def test_stl10_preset_is_the_official_transform():
    """luckmatters data/transforms.py: jitter 0.8/0.8/0.8/0.2, a blur of kernel
    int(0.1 * 96) = 9 on every view, sigma U(0.1, 2), no normalisation."""
    config = get_config("direct_pred", dataset="stl10")
    assert (config.image_size, config.jitter, config.blur_prob, config.blur_kernel_size,
            config.blur_sigma, config.normalize_mean, config.normalize_std) == (
        96, (0.8, 0.8, 0.8, 0.2), 1.0, 9, (0.1, 2.0), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
