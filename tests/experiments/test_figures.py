"""The figures of a results folder show what history.csv and the eigenspace files hold.

Each test writes a results folder by hand (as a run writes it: config.json and the
two-phase history.csv) and reads the drawn lines back from the Figure, so a panel that
is empty, or shows another phase's column, fails.
"""

import csv
import json
import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from config import get_config  # noqa: E402
from experiments import eigenspace  # noqa: E402
from experiments.run_folder import RunDirectory  # noqa: E402
from experiments.visualisation import draw_figures, run_curves_figure  # noqa: E402

PRETRAIN = ("loss", "z_std", "knn_accuracy", "learning_rate")
PROBE = ("probe_loss", "probe_train_top1", "probe_test_top1", "probe_test_top5")


def _write_run(root, *, epochs=5, probe_epochs=3, knn_every=2, eigen_records=None):
    rng = np.random.default_rng(0)
    run = RunDirectory(str(root), "run")
    root.joinpath("run").mkdir()
    config = get_config("direct_pred", knn_every=knn_every, eigenspace=bool(eigen_records))
    with open(run.config_json, "w") as f:
        f.write(config.to_json())
    columns = ["phase", "epoch", *[c for c in PRETRAIN if knn_every or c != "knn_accuracy"],
               *PROBE]
    rows = []
    for epoch in range(1, epochs + 1):
        row = {"phase": "pretrain", "epoch": epoch, "loss": 2 - 0.1 * epoch,
               "z_std": 0.05 + 0.001 * epoch, "learning_rate": 0.03}
        if knn_every:
            row["knn_accuracy"] = 0.2 + 0.01 * epoch if epoch % knn_every == 0 else "nan"
        rows.append(row)
    for epoch in range(1, probe_epochs + 1):
        rows.append({"phase": "probe", "epoch": epoch,
                     **{c: float(rng.uniform()) for c in PROBE}})
    with open(run.history, "w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerows(rows)
    if eigen_records:
        eigenspace.save_eigenspace(eigen_records, run.eigenspace)
    with open(run.metrics, "w") as f:
        json.dump({"num_classes": 10}, f)
    return run


def _expected(path, phase, column):
    """(epochs, values) of the finite values of one column of one phase, read with csv."""
    points = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            if row["phase"] == phase and row.get(column) not in (None, ""):
                value = float(row[column])
                if math.isfinite(value):
                    points.append((float(row["epoch"]), value))
    return np.array(points).reshape(-1, 2)


def _is_reference(line):
    """An axhline: x from 0 to 1 in axes coordinates, one y."""
    return list(line.get_xdata()) == [0, 1] and len(set(line.get_ydata())) == 1


def _references(axis):
    """``{label: (y, (colour, linestyle))}`` of an axis's horizontal reference lines."""
    return {line.get_label(): (line.get_ydata()[0], (line.get_color(), line.get_linestyle()))
            for line in axis.get_lines() if _is_reference(line)}


def _lines_by_label(figure):
    out = {}
    for axis in figure.axes:
        for line in axis.get_lines():
            if not line.get_label().startswith("_") and not _is_reference(line):
                out[line.get_label()] = (axis.get_title(), np.asarray(line.get_xydata()))
    return out


LABELS = {"probe_train_top1": "train top-1", "probe_test_top1": "test top-1",
          "probe_test_top5": "test top-5"}


@pytest.mark.parametrize("probe_epochs", [3, 0])
@pytest.mark.parametrize("knn_every", [2, 0])
def test_every_panel_draws_the_csv_values_of_its_phase(tmp_path, probe_epochs, knn_every):
    run = _write_run(tmp_path, probe_epochs=probe_epochs, knn_every=knn_every)
    figure = run_curves_figure(run.root)
    lines = _lines_by_label(figure)
    expected_columns = [c for c in PRETRAIN if knn_every or c != "knn_accuracy"]
    if probe_epochs:
        expected_columns += list(PROBE)
    assert sorted(lines) == sorted(LABELS.get(c, c) for c in expected_columns)
    for column in expected_columns:
        phase = "probe" if column.startswith("probe_") else "pretrain"
        title, xy = lines[LABELS.get(column, column)]
        assert title.startswith("linear probe" if phase == "probe" else "pre-training")
        np.testing.assert_allclose(xy, _expected(run.history, phase, column))
    texts = [t.get_text() for axis in figure.axes for t in axis.texts]
    assert "no finite values" not in texts
    assert figure.get_suptitle().startswith("run: direct_pred (method='noncontrastive'")


def test_z_std_panel_shows_healthy_warning_and_collapse_apart(tmp_path):
    run = _write_run(tmp_path)
    figure = run_curves_figure(run.root)
    axis = next(a for a in figure.axes if a.get_title().startswith("pre-training: z-std"))
    refs = _references(axis)
    healthy = 1 / math.sqrt(get_config("direct_pred").projection_dim)
    by_word = {word: next(v for k, v in refs.items() if word in k)
               for word in ("(healthy)", "(collapse warning)", "0 (collapse)")}
    assert [y for y, _ in by_word.values()] == pytest.approx([healthy, 0.1 * healthy, 0.0])
    assert len({style for _, style in by_word.values()}) == 3  # visibly different
    assert {t.get_text() for t in axis.get_legend().get_texts()} >= set(refs)


def test_accuracy_panels_draw_chance_and_the_console_words(tmp_path):
    figure = run_curves_figure(_write_run(tmp_path).root)
    for title in ("pre-training: kNN top-1", "linear probe: accuracy"):
        axis = next(a for a in figure.axes if a.get_title() == title)
        (label, (y, _)), = _references(axis).items()
        assert label.startswith("chance 1/10") and y == pytest.approx(0.1)
    labels = [line.get_label() for axis in figure.axes for line in axis.get_lines()]
    assert "test top-1" in labels and not any("eval" in label for label in labels)


def test_one_epoch_panels_have_integer_epoch_ticks(tmp_path):
    from experiments.visualisation import eigenspace_figure
    figure = run_curves_figure(_write_run(tmp_path, epochs=1, probe_epochs=1).root)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4, 4))
    eigen = eigenspace_figure([{"epoch": 2, **eigenspace.eigen_metrics(a @ a.T, a)}])
    for axis in [*figure.axes, eigen.axes[3]]:
        if axis.get_visible() and axis.get_xlabel() == "epoch":
            ticks = [t for t in axis.get_xticks() if axis.get_xlim()[0] <= t <= axis.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), (axis.get_title(), ticks)


@pytest.mark.parametrize("with_eigenspace", [True, False])
def test_draw_figures_writes_the_eigenspace_figure_only_with_records(tmp_path, with_eigenspace):
    rng = np.random.default_rng(1)
    records = None
    if with_eigenspace:
        records = []
        for epoch in (0, 2, 4):
            a = rng.standard_normal((6, 6))
            records.append({"epoch": epoch, **eigenspace.eigen_metrics(a @ a.T, a)})
    run = _write_run(tmp_path, eigen_records=records)
    drawn = draw_figures(run.root)
    assert drawn == [run.curves_png] + ([run.eigenspace_png] if with_eigenspace else [])


def test_eigenspace_figure_draws_each_record():
    from experiments.visualisation import EIGENVALUE_FLOOR, eigenspace_figure

    rng = np.random.default_rng(2)
    records = []
    for epoch in (4, 0, 2):
        a = rng.standard_normal((5, 5))
        f = a @ a.T
        f[-1] = f[:, -1] = 0.0
        records.append({"epoch": epoch, **eigenspace.eigen_metrics(f, f + 0.1 * a)})
    figure = eigenspace_figure(records, title="run: direct_pred")
    ax_f, ax_wp, ax_align, ax_asym = figure.axes[:4]
    by_epoch = sorted(records, key=lambda r: r["epoch"])
    for axis, key, transform in (
            (ax_f, "f_eigenvalues", lambda v: np.log10(np.maximum(v, EIGENVALUE_FLOOR))),
            (ax_wp, "wp_eigenvalues", lambda v: v), (ax_align, "alignment", lambda v: v)):
        drawn = [line.get_ydata() for line in axis.get_lines() if len(line.get_ydata()) > 2]
        assert len(drawn) == 3
        for ys, record in zip(drawn, by_epoch):
            np.testing.assert_allclose(ys, transform(np.asarray(record[key], float)))
    asym = [line for line in ax_asym.get_lines() if line.get_marker() == "o"][0]
    np.testing.assert_allclose(asym.get_xydata(),
                               [[r["epoch"], r["asymmetry"]] for r in by_epoch])
    assert figure.get_suptitle() == "run: direct_pred"


def test_bar_chart_draws_the_rows_with_their_spread_and_the_floor(tmp_path, monkeypatch):
    from experiments import visualisation

    rows = [{"name": "random_init", "probe_top1": 0.30, "probe_top1_std": 0.02,
             "knn_accuracy": 0.28},
            {"name": "byol", "probe_top1": 0.40, "probe_top1_std": 0.01, "knn_accuracy": None},
            {"name": "sym", "probe_top1": 0.10, "knn_accuracy": 0.12,
             "expected_collapse": True}]
    saved = {}
    monkeypatch.setattr(visualisation, "save_figure",
                        lambda figure, path: saved.setdefault("figure", figure) and path)
    visualisation.plot_bar_chart(rows, tmp_path / "bars.png", floor="random_init")
    axis = saved["figure"].axes[0]
    heights = sorted(round(p.get_height(), 6) for p in axis.patches)
    assert heights == [0.1, 0.12, 0.28, 0.3, 0.4]
    floors = sorted(round(line.get_ydata()[0], 6) for line in axis.get_lines()
                    if line.get_linestyle() == "--")
    assert floors == [0.28, 0.3]
    labels = [t.get_text() for t in axis.get_xticklabels()]
    assert labels == ["random_init", "byol", "sym\n(expected to collapse)"]
    with pytest.raises(ValueError, match="floor row 'nope'"):
        visualisation.plot_bar_chart(rows, tmp_path / "x.png", floor="nope")
