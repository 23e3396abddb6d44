"""The pieces the linear theory adds to the package: Config.loss, the linear backbone,
the identity projector, the l2 loss and the gaussian data (against NumPy)."""

import numpy as np
import pytest

import config as config_lib
from config import Config


def _linear_config(**kw):
    base = dict(dataset="gaussian", image_size=4, backbone="linear", projector="none",
                projection_dim=4, predictor="linear", loss="l2", momentum=0.0)
    base.update(kw)
    return Config(**base)


def test_config_loss_choices_and_method_rule():
    assert Config().loss == "cosine"
    assert _linear_config().loss == "l2"
    with pytest.raises(ValueError, match="loss"):
        Config(loss="mse")
    with pytest.raises(ValueError, match="Config.loss applies"):
        Config(method="simclr", loss="l2")
    assert "linear" in config_lib.BACKBONES and "none" in config_lib.PROJECTORS


def test_linear_backbone_and_gaussian_data_go_together():
    with pytest.raises(ValueError, match="gaussian"):
        Config(backbone="linear")
    with pytest.raises(ValueError, match="linear"):
        Config(dataset="gaussian")


def test_config_round_trip_keeps_loss():
    c = _linear_config()
    assert Config.from_json(c.to_json()) == c


def test_squared_l2_and_symmetric_loss_against_numpy():
    from models import losses
    rng = np.random.default_rng(0)
    p1, z2, p2, z1 = (rng.normal(size=(5, 3)).astype(np.float32) for _ in range(4))
    per = np.asarray(losses.squared_l2(p1, z2))
    np.testing.assert_allclose(per, np.sum((p1 - z2) ** 2, axis=1), rtol=1e-6)
    total = float(losses.symmetric_l2_loss(p1, z2, p2, z1))
    ref = np.mean(np.sum((p1 - z2) ** 2, 1)) + np.mean(np.sum((p2 - z1) ** 2, 1))
    assert total == pytest.approx(ref, rel=1e-6)


def test_l2_loss_stops_the_target_gradient():
    import tensorflow as tf
    from models import losses
    p = tf.Variable(np.ones((2, 3), np.float32))
    z = tf.Variable(np.zeros((2, 3), np.float32))
    with tf.GradientTape() as tape:
        value = losses.symmetric_l2_loss(p, z, p, z)
    gp, gz = tape.gradient(value, [p, z])
    np.testing.assert_allclose(gp.numpy(), 2 * 2 * np.ones((2, 3)) / 2)  # 2 terms, 2(p-z)/B
    assert gz is None


def test_linear_backbone_is_one_bias_free_dense():
    from models import backbones
    c = _linear_config(image_size=5, width=0.6, projection_dim=3)
    enc = backbones.build_encoder(c)
    assert [w.shape for w in enc.weights] == [(5, 3)]
    x = np.random.default_rng(0).normal(size=(2, 5)).astype(np.float32)
    np.testing.assert_allclose(enc(x).numpy(), x @ enc.weights[0].numpy(), rtol=1e-5)
    assert backbones.feature_dim(c) == 3
    with pytest.raises(ValueError, match="linear"):
        backbones.feature_dim("linear")


def test_identity_projector():
    from models import heads
    proj = heads.projector(4, output_dim=4, kind="none")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(proj(x).numpy(), x)
    assert not proj.weights
    with pytest.raises(ValueError, match="projection_dim"):
        heads.projector(4, output_dim=3, kind="none")


def test_gaussian_views_moments_seed_and_errors():
    from data_processing.datasets import load_dataset
    from data_processing.sources import make_gaussian_views
    x1, x2 = make_gaussian_views(200_000, 3, seed=1, sigma2=0.5)
    assert x1.shape == (200_000, 3) and x1.dtype == np.float32
    np.testing.assert_allclose(x1.T @ x1 / len(x1), 1.5 * np.eye(3), atol=0.02)
    np.testing.assert_allclose(x1.T @ x2 / len(x1), np.eye(3), atol=0.02)
    a, _ = make_gaussian_views(10, 3, seed=1)
    b, _ = make_gaussian_views(10, 3, seed=1)
    c, _ = make_gaussian_views(10, 3, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    cov = np.diag([2.0, 1.0, 0.5])
    y1, y2 = make_gaussian_views(200_000, 3, seed=0, data_cov=cov, aug_cov=0.1 * cov)
    np.testing.assert_allclose(y1.T @ y2 / len(y1), cov, atol=0.03)
    for kwargs, match in ((dict(num=0, dim=3), "num"), (dict(num=3, dim=0), "dim"),
                          (dict(num=3, dim=2, sigma2=-1.0), "sigma2"),
                          (dict(num=3, dim=2, data_cov=np.eye(3)), "data_cov"),
                          (dict(num=3, dim=2, aug_cov=-np.eye(2)), "aug_cov")):
        with pytest.raises(ValueError, match=match):
            make_gaussian_views(seed=0, **kwargs)
    with pytest.raises(ValueError, match="gaussian"):
        load_dataset("gaussian")


def test_theory_package_imports_without_tensorflow():
    import subprocess
    import sys
    code = ("import sys; import experiments.theory.claims, experiments.theory.figures, "
            "experiments.theory.package_run; "
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=_root())


def _root():
    import os
    return os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
