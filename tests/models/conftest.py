"""Tiny configurations so that model tests trace and run quickly on a CPU."""

import numpy as np
import pytest

from config import get_config

TINY = dict(width=0.0625, image_size=8, batch_size=4, projector_hidden_dim=16,
            projection_dim=8, predictor_hidden_dim=16)


def tiny_config(name="byol", **overrides):
    base = get_config(name)
    tiny = dict(TINY)
    if base.method != "noncontrastive" or overrides.get("predictor", base.predictor) != "mlp":
        del tiny["predictor_hidden_dim"]  # refused where no MLP predictor uses it
    return base.replace(**{**tiny, **overrides})


@pytest.fixture
def views():
    rng = np.random.default_rng(0)
    x1 = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    x2 = rng.normal(size=(4, 8, 8, 3)).astype("float32")
    return x1, x2
