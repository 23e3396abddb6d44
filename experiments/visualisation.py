"""Figures for the experiments (matplotlib Agg canvas; never shows a window).

The figures of a results folder (:func:`run_curves_figure`, :func:`draw_figures`) are
drawn from its files only: ``history.csv``, ``config.json``, ``metrics.json`` and the
eigenspace records.

Figures are built as ``matplotlib.figure.Figure`` on an explicit Agg canvas,
not through ``pyplot``: nothing is registered in pyplot's figure manager (so
nothing to leak or close) and the caller's backend, e.g. a notebook's inline
backend, is left untouched.
"""

import json
import math
import os

import numpy as np
from matplotlib import cm, colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from config import Config
from experiments import eigenspace, run_folder, safe_io

__all__ = ["plot_eigenspace", "plot_bar_chart", "save_figure",
           "training_curve_panels", "training_curves_figure", "eigenspace_figure",
           "run_curves_figure", "draw_figures"]

#: Floor used before log10 of F's eigenvalues (F is PSD; tiny/negative values are round-off).
EIGENVALUE_FLOOR = 1e-10


def _new_figure(figsize):
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path):
    """Writes ``figure`` as a PNG at ``path`` (parents made) atomically: a failed write
    leaves the previous file intact and raises ``safe_io.WriteError`` naming the path.
    Frees the figure; returns ``path``."""
    path = os.fspath(path)
    try:
        safe_io.atomic_write(path, lambda handle: figure.savefig(handle, format="png", dpi=100))
    finally:
        figure.clear()
    return path


def _vector(record, key):
    return np.asarray(record[key], dtype=np.float64).reshape(-1)


def plot_eigenspace(records, path, title=None, floor=EIGENVALUE_FLOOR):
    """Saves :func:`eigenspace_figure` as a PNG at ``path`` and returns ``path``."""
    return save_figure(eigenspace_figure(records, title, floor), path)


def eigenspace_figure(records, title=None, floor=EIGENVALUE_FLOOR):
    """Four-panel eigenspace figure (paper Fig. 2, Sec. 3.1; as the original reproduction).

    (a) ``log10 max(eig(F), floor)`` sorted, (b) eigenvalues of ``(Wp+Wp^T)/2``,
    (c) ``cos(u_j, Wp u_j)`` per eigenvector ``u_j`` of ``F``, (d) asymmetry
    ``|Wp - Wp^T|_F / |Wp|_F`` vs epoch. ``records``: list of dicts as in
    :mod:`experiments.eigenspace` (one curve per epoch, coloured by epoch).
    """
    if isinstance(records, dict) or not records:
        raise ValueError("records must be a non-empty list of eigenspace records.")
    for i, record in enumerate(records):
        missing = {"epoch", "asymmetry", "f_eigenvalues", "wp_eigenvalues",
                   "alignment"} - set(record)
        if missing:
            raise ValueError(f"records[{i}] lacks keys {sorted(missing)}.")
    order = sorted(range(len(records)), key=lambda i: records[i]["epoch"])
    epochs = [int(records[i]["epoch"]) for i in order]
    figure = _new_figure((12, 9))
    (ax_f, ax_wp), (ax_align, ax_asym) = figure.subplots(2, 2)
    cmap = colormaps["viridis"]
    norm = colors.Normalize(vmin=min(epochs), vmax=max(epochs) if max(epochs) > min(epochs)
                            else min(epochs) + 1)
    for i, epoch in zip(order, epochs):
        record = records[i]
        color = cmap(norm(epoch))
        f_values = _vector(record, "f_eigenvalues")
        index = np.arange(f_values.size)
        ax_f.plot(index, np.log10(np.maximum(f_values, floor)), color=color,
                  label=f"epoch {epoch}")
        wp_values = _vector(record, "wp_eigenvalues")
        ax_wp.plot(np.arange(wp_values.size), wp_values, color=color)
        alignment = _vector(record, "alignment")
        ax_align.plot(np.arange(alignment.size), alignment, color=color)
    asymmetry = [float(records[i]["asymmetry"]) for i in order]
    ax_asym.plot(epochs, asymmetry, marker="o")

    ax_f.set(title="(a) eigenvalues of F", xlabel="eigen-index (descending)",
             ylabel=f"log10 max(eigenvalue, {floor:g})")
    ax_wp.axhline(0.0, color="grey", linewidth=0.8)
    ax_wp.set(title="(b) eigenvalues of (Wp + Wp^T)/2", xlabel="eigen-index (descending)",
              ylabel="eigenvalue")
    ax_align.axhline(0.0, color="grey", linewidth=0.8)
    ax_align.set(title="(c) alignment cos(u_j, Wp u_j), u_j: eigenvectors of F",
                 xlabel="eigen-index of F (descending)", ylabel="cosine", ylim=(-1.05, 1.05))
    ax_asym.set(title="(d) asymmetry |Wp - Wp^T|_F / |Wp|_F", xlabel="epoch",
                ylabel="relative asymmetry")
    for axis in (ax_f, ax_wp, ax_align, ax_asym):
        axis.grid(True, alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    _integer_epochs(ax_asym, np.asarray(epochs))
    if len(set(epochs)) > 1:
        mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
        bar = figure.colorbar(mappable, ax=[ax_f, ax_wp, ax_align, ax_asym], label="epoch",
                              shrink=0.8)
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    else:
        ax_f.legend()
    if title:
        figure.suptitle(title)
    return figure


#: Readable names of the logged metrics (history.csv columns): (panel title, y label).
_METRIC_LABELS = {
    "loss": ("loss", "SSL loss (per step, epoch mean)"),
    "learning_rate": ("learning rate", "learning rate (end of epoch)"),
    "z_std": ("z-std (collapse monitor)", "std of normalised z"),
    "knn_accuracy": ("kNN top-1", "accuracy"),
    "probe_loss": ("probe loss", "cross-entropy"),
}
#: Probe metrics drawn together in one accuracy panel, with their legend labels.
_PROBE_ACCURACIES = (("probe_train_top1", "train top-1"), ("probe_test_top1", "test top-1"),
                     ("probe_test_top5", "test top-5"))
#: Styles of the reference lines: what is healthy, what the log warns about, collapse
#: and chance are told apart by colour and dash as well as by their labels.
REFERENCE_STYLES = {
    "healthy": dict(color="tab:green", linestyle="--"),
    "warning": dict(color="tab:orange", linestyle="-."),
    "collapse": dict(color="tab:red", linestyle=":"),
    "chance": dict(color="dimgrey", linestyle=":"),
}


def _panel_order(names):
    """Metric names in panel order: ``loss``, then ``learning_rate`` beside it, then the rest."""
    names = list(names)
    if "loss" in names and "learning_rate" in names:
        first = ["loss", "learning_rate"]
        return first + [n for n in names if n not in first]
    return names


def _phase_series(history, phase):
    """``{metric: (epochs, values)}`` of one phase's ``{metric: per-epoch values}``;
    epochs are 1-based unless ``history["epoch"]`` gives them; empty metrics are dropped."""
    if history is None:
        return {}
    if not hasattr(history, "items"):
        raise ValueError(f"{phase} history must be a dict. Received: {type(history).__name__}")
    explicit = None
    if "epoch" in history:
        explicit = np.asarray(history["epoch"], dtype=np.float64).reshape(-1)
    series = {}
    for name, values in history.items():
        if name == "epoch":
            continue
        try:
            values = np.asarray(values, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"history[{name!r}] must be a list of numbers.") from None
        if values.size == 0:
            continue
        if explicit is not None and values.size != explicit.size:
            raise ValueError(f"history[{name!r}] has {values.size} values but "
                             f"history['epoch'] has {explicit.size}.")
        epochs = explicit if explicit is not None else np.arange(1, values.size + 1.0)
        series[name] = (epochs, values)
    return series


def training_curve_panels(pretrain, probe=None, z_std_reference=None, num_classes=None):
    """The panels of the training-curves figure, as data: a list of dicts with ``title``,
    ``ylabel``, ``lines`` (``[(label, epochs, values)]``, non-finite values kept: the
    drawing skips them) and ``hlines`` (``[(label, y, kind)]``, ``kind`` a key of
    :data:`REFERENCE_STYLES`).

    Pre-training panels first (loss, learning rate, z-std with the references
    ``z_std_reference`` = 1/sqrt(d) of a healthy, whitened z, the log's collapse warning
    at 0.1/sqrt(d) and 0 for collapse, kNN top-1, then any other metric), then the
    linear probe's (loss; train/test accuracies in one panel; any other metric).
    Accuracy panels draw chance, 1/``num_classes``, when it is given.
    """
    from experiments.callbacks import COLLAPSE_FRACTION
    chance = ([(f"chance 1/{num_classes} = {1 / num_classes:.3g}", 1 / num_classes, "chance")]
              if num_classes else [])
    panels = []
    pre = _phase_series(pretrain, "pre-training")
    for name in _panel_order(pre):
        title, ylabel = _METRIC_LABELS.get(name, (name, name))
        hlines = []
        if name == "z_std" and z_std_reference:
            warning = COLLAPSE_FRACTION * z_std_reference
            hlines = [(f"1/sqrt(d) = {z_std_reference:.3g} (healthy)", z_std_reference,
                       "healthy"),
                      (f"{COLLAPSE_FRACTION:g}/sqrt(d) = {warning:.3g} (collapse warning)",
                       warning, "warning"),
                      ("0 (collapse)", 0.0, "collapse")]
        elif name == "knn_accuracy":
            hlines = list(chance)
        panels.append({"title": f"pre-training: {title}", "ylabel": ylabel,
                       "lines": [(name, *pre[name])], "hlines": hlines})
    post = _phase_series(probe, "probe")
    accuracies = [(label, *post.pop(name)) for name, label in _PROBE_ACCURACIES if name in post]
    for name in _panel_order(post):
        title, ylabel = _METRIC_LABELS.get(name, (name, name))
        panels.append({"title": f"linear probe: {title}", "ylabel": ylabel,
                       "lines": [(name, *post[name])], "hlines": []})
    if accuracies:
        panels.append({"title": "linear probe: accuracy", "ylabel": "accuracy",
                       "lines": accuracies, "hlines": list(chance)})
    if not panels:
        raise ValueError("history has no non-empty metric to plot.")
    return panels


def _integer_epochs(axis, epochs):
    """Integer epoch ticks, also for a panel of one epoch (an x range under 2 wide
    would otherwise get ticks such as 1.9 ... 2.1)."""
    if len(epochs) and np.ptp(epochs) < 2:
        axis.set_xlim(np.min(epochs) - 1, np.max(epochs) + 1)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def training_curves_figure(pretrain, probe=None, title=None, z_std_reference=None,
                           num_classes=None):
    """The training-curves :class:`Figure` (see :func:`training_curve_panels`); one axis
    per panel, in order, each line drawn at its finite values only."""
    panels = training_curve_panels(pretrain, probe, z_std_reference, num_classes)
    columns = min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = _new_figure((4.8 * columns, 3.4 * rows + (0.4 if title else 0)))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for axis, panel in zip(axes, panels):
        drawn = 0
        for label, epochs, values in panel["lines"]:
            finite = np.isfinite(values)
            if finite.any():
                axis.plot(epochs[finite], values[finite], label=label, markersize=3,
                          marker="o" if finite.sum() < 30 else None)
                drawn += 1
        for label, y, kind in panel["hlines"]:
            axis.axhline(y, linewidth=1.2, label=label, **REFERENCE_STYLES[kind])
        if not drawn:
            axis.text(0.5, 0.5, "no finite values", ha="center", va="center",
                      transform=axis.transAxes)
        if len(panel["lines"]) > 1 or panel["hlines"]:
            axis.legend(fontsize=7)
        axis.set(title=panel["title"], xlabel="epoch", ylabel=panel["ylabel"])
        axis.grid(True, alpha=0.3)
        _integer_epochs(axis, np.concatenate([e[np.isfinite(v)]
                                              for _, e, v in panel["lines"]]))
    for axis in axes[len(panels):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    return figure


#: Legend labels of the bar chart's metrics.
_BAR_LABELS = {"probe_top1": "linear probe top-1", "probe_top5": "linear probe top-5",
               "knn_accuracy": "kNN top-1"}


def plot_bar_chart(rows, path, metrics=("probe_top1", "knn_accuracy"), title=None,
                   floor=None, ylabel="top-1 accuracy"):
    """Grouped bars: one group per row (``row["name"]``), one bar per metric, with error
    bars where a row has ``METRIC_std`` (the sample std over seeds). Rows with
    ``expected_collapse`` are labelled so. ``floor``: the name of a row (e.g. the
    random-init encoder) whose values are drawn as dashed lines across the chart.

    Missing / ``None`` / NaN values leave a gap; metrics absent from every row
    are dropped. Saves a PNG, returns ``path``.
    """
    if isinstance(rows, dict) or not rows:
        raise ValueError("rows must be a non-empty list of dicts with a 'name'.")
    if isinstance(metrics, str):
        metrics = (metrics,)
    names = []
    for i, row in enumerate(rows):
        if "name" not in row:
            raise ValueError(f"rows[{i}] lacks the key 'name'.")
        names.append(str(row["name"]) + ("\n(expected to collapse)"
                                         if row.get("expected_collapse") else ""))

    def value(row, metric):
        raw = row.get(metric)
        try:
            number = float(raw) if raw is not None else math.nan
        except (TypeError, ValueError):
            raise ValueError(f"Row {row['name']!r}: {metric!r} must be a number. "
                             f"Received: {raw!r}") from None
        return number

    table = {m: np.array([value(row, m) for row in rows]) for m in metrics}
    table = {m: v for m, v in table.items() if np.isfinite(v).any()}
    if not table:
        raise ValueError(f"None of the metrics {tuple(metrics)} has a value in rows.")
    floor_row = next((row for row in rows if row["name"] == floor), None)
    if floor is not None and floor_row is None:
        raise ValueError(f"floor row {floor!r} is not among the rows {names}.")
    figure = _new_figure((max(6.0, 0.75 * len(rows) * max(1, len(table)) ** 0.5 + 2.5), 4.8))
    axis = figure.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(table)
    for j, (metric, values) in enumerate(table.items()):
        finite = np.isfinite(values)
        offset = (j - (len(table) - 1) / 2) * width
        errors = np.array([value(row, f"{metric}_std") for row in rows])
        errors = np.where(np.isfinite(errors), errors, 0.0)
        bars = axis.bar(x[finite] + offset, values[finite], width,
                        yerr=errors[finite] if errors.any() else None, capsize=3,
                        label=_BAR_LABELS.get(metric, metric), color=f"C{j}")
        axis.bar_label(bars, fmt="%.3g", fontsize=7)
        if floor_row is not None and math.isfinite(value(floor_row, metric)):
            axis.axhline(value(floor_row, metric), color=f"C{j}", linestyle="--",
                         linewidth=0.9, label=f"{floor} ({_BAR_LABELS.get(metric, metric)})")
    axis.set_xticks(x, names, rotation=30 if len(rows) > 4 else 0, ha="right"
                    if len(rows) > 4 else "center", fontsize=8)
    axis.set_ylabel(ylabel)
    axis.legend(fontsize=8)
    axis.grid(True, axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    return save_figure(figure, path)


# ---- the figures of a results folder -----------------------------------------------------

def _figure_title(run_dir):
    """``NAME: factory (method=..., predictor=...)`` from the run's config.json, if readable."""
    name = os.path.basename(os.path.normpath(run_dir))
    try:
        with open(run_folder.RunDirectory.from_path(run_dir).config_json) as f:
            config = Config.from_json(f.read())
    except (OSError, ValueError, TypeError):
        return name, None
    return f"{name}: {config.name} ({config.describe()})", config


def run_curves_figure(run_dir, heading=None):
    """The training-curves Figure of a results folder (``None`` without history.csv):
    each phase's columns of history.csv in its own panels. ``heading``: the
    ``(title, config)`` of :func:`_figure_title`, read from config.json when None."""
    run = run_folder.RunDirectory.from_path(run_dir)
    if not os.path.exists(run.history):
        return None
    title, config = heading or _figure_title(run_dir)
    rows = run_folder.read_history(run)
    reference = 1.0 / math.sqrt(config.projection_dim) if config else None
    num_classes = None
    if os.path.exists(run.metrics):  # chance level on the accuracy panels
        try:
            with open(run.metrics) as f:
                num_classes = json.load(f).get("num_classes")
        except (OSError, ValueError):
            pass
    return training_curves_figure(
        run_folder.history_columns(rows, "pretrain"),
        probe=run_folder.history_columns(rows, "probe"), title=title,
        z_std_reference=reference, num_classes=num_classes)


def draw_figures(run_dir):
    """Training-curve and eigenspace PNGs from the files of a results folder."""
    run = run_folder.RunDirectory.from_path(run_dir)
    heading = _figure_title(run_dir)  # config.json read once for both figures
    drawn = []
    figure = run_curves_figure(run_dir, heading)
    if figure is not None:
        drawn.append(save_figure(figure, run.curves_png))
    if os.path.isdir(run.eigenspace):
        records = eigenspace.load_eigenspace(run.eigenspace)
        drawn.append(plot_eigenspace(records, run.eigenspace_png, title=heading[0]))
    return drawn
