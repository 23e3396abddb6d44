"""Tests for experiments.visualisation: PNGs are written and no figure leaks."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from experiments.eigenspace import eigen_metrics  # noqa: E402
from experiments.visualisation import (plot_bar_chart, plot_eigenspace,  # noqa: E402
                                       save_figure, training_curves_figure)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def plot_training_curves(pretrain, path, title=None, probe=None):
    """The training-curves PNG at ``path`` (what a run draws from history.csv)."""
    return save_figure(training_curves_figure(pretrain, probe, title), path)


@pytest.fixture(autouse=True)
def no_open_figures():
    plt.close("all")
    yield
    assert plt.get_fignums() == []


def _assert_png(path):
    with open(path, "rb") as handle:
        data = handle.read()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE


def _records(epochs, d=8):
    rng = np.random.default_rng(0)
    out = []
    for epoch in epochs:
        a = rng.standard_normal((d, d))
        f = a @ a.T
        f[-1] = f[:, -1] = 0.0            # a zero eigenvalue: log10 must be floored
        wp = f + 0.1 * rng.standard_normal((d, d))
        out.append({"epoch": epoch, **eigen_metrics(f, wp)})
    return out


def test_plot_eigenspace_many_epochs(tmp_path):
    path = tmp_path / "figs" / "eigen.png"
    returned = plot_eigenspace(_records([10, 0, 5]), path, title="BYOL linear predictor")
    assert returned == str(path)
    _assert_png(path)


def test_plot_eigenspace_single_record(tmp_path):
    path = plot_eigenspace(_records([3]), tmp_path / "one.png")
    _assert_png(path)


def test_plot_eigenspace_rejects_empty(tmp_path):
    with pytest.raises(ValueError):
        plot_eigenspace([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="alignment"):
        plot_eigenspace([{"epoch": 0, "f_eigenvalues": [1.0], "wp_eigenvalues": [1.0],
                          "asymmetry": 0.0}], tmp_path / "x.png")


def test_plot_training_curves_with_nan(tmp_path):
    history = {"loss": [-0.1, -0.5, -0.8, -0.9], "z_std": [0.1, 0.09, 0.08, 0.08],
               "knn_accuracy": [np.nan, 0.3, np.nan, 0.5],
               "learning_rate": [0.03, 0.02, 0.01, 0.0],
               "probe_top1": [float("nan")] * 4, "empty": []}
    path = plot_training_curves(history, tmp_path / "curves.png")
    _assert_png(path)


def test_learning_rate_panel_sits_beside_the_loss(tmp_path):
    from experiments.visualisation import _panel_order
    assert _panel_order(["z_std", "loss", "knn_accuracy", "learning_rate", "probe_loss"]) == [
        "loss", "learning_rate", "z_std", "knn_accuracy", "probe_loss"]
    assert _panel_order(["z_std", "loss"]) == ["z_std", "loss"]  # no learning rate logged
    assert _panel_order(["learning_rate", "z_std"]) == ["learning_rate", "z_std"]
    _assert_png(plot_training_curves({"loss": [1.0, 0.5], "learning_rate": [0.1, 0.0]},
                                     tmp_path / "lr.png"))


def test_plot_training_curves_single_metric_and_epochs(tmp_path):
    _assert_png(plot_training_curves({"loss": [1.0]}, tmp_path / "a.png"))
    _assert_png(plot_training_curves({"epoch": [0, 10], "knn_accuracy": [0.2, 0.4]},
                                     tmp_path / "b.png"))
    with pytest.raises(ValueError):
        plot_training_curves({"epoch": [0, 10], "loss": [1.0]}, tmp_path / "c.png")
    with pytest.raises(ValueError):
        plot_training_curves({}, tmp_path / "d.png")


def test_plot_bar_chart(tmp_path):
    rows = [{"name": "byol", "probe_top1": 0.85, "knn_accuracy": 0.8},
            {"name": "directpred", "probe_top1": 0.86, "knn_accuracy": None},
            {"name": "simsiam", "probe_top1": float("nan"), "knn_accuracy": 0.75}]
    _assert_png(plot_bar_chart(rows, tmp_path / "bars.png"))
    _assert_png(plot_bar_chart(rows[:1], tmp_path / "one.png", metrics=("probe_top1",)))
    with pytest.raises(ValueError):
        plot_bar_chart(rows, tmp_path / "none.png", metrics=("missing",))
    with pytest.raises(ValueError):
        plot_bar_chart([{"probe_top1": 1.0}], tmp_path / "noname.png")
