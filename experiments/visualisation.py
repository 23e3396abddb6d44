"""Figures for the experiments (matplotlib Agg canvas; never shows a window).

Figures are built as ``matplotlib.figure.Figure`` on an explicit Agg canvas,
not through ``pyplot``: nothing is registered in pyplot's figure manager (so
nothing to leak or close) and the caller's backend, e.g. a notebook's inline
backend, is left untouched.
"""

import math
import os

import numpy as np
from matplotlib import cm, colormaps, colors
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = ["plot_eigenspace", "plot_training_curves", "plot_bar_chart"]

#: Floor used before log10 of F's eigenvalues (F is PSD; tiny/negative values are round-off).
EIGENVALUE_FLOOR = 1e-10


def _new_figure(figsize):
    figure = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path):
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png", dpi=100)
    figure.clear()
    return path


def _vector(record, key):
    return np.asarray(record[key], dtype=np.float64).reshape(-1)


def plot_eigenspace(records, path, title=None, floor=EIGENVALUE_FLOOR):
    """Four-panel eigenspace figure (paper Sec. 4, Fig. 3/4; as the original reproduction).

    (a) ``log10 max(eig(F), floor)`` sorted, (b) eigenvalues of ``(Wp+Wp^T)/2``,
    (c) ``cos(u_j, Wp u_j)`` per eigenvector ``u_j`` of ``F``, (d) asymmetry
    ``|Wp - Wp^T|_F / |Wp|_F`` vs epoch. ``records``: list of dicts as in
    :mod:`experiments.eigenspace` (one curve per epoch, coloured by epoch).
    Saves a PNG at ``path`` and returns ``path``.
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
    if len(set(epochs)) == 1:
        ax_asym.set_xlim(epochs[0] - 1, epochs[0] + 1)

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
    if len(set(epochs)) > 1:
        mappable = cm.ScalarMappable(norm=norm, cmap=cmap)
        figure.colorbar(mappable, ax=[ax_f, ax_wp, ax_align, ax_asym], label="epoch",
                        shrink=0.8)
    else:
        ax_f.legend()
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def _panel_order(names):
    """Metric names in panel order: ``loss``, then ``learning_rate`` beside it, then the rest."""
    names = list(names)
    if "loss" in names and "learning_rate" in names:
        first = ["loss", "learning_rate"]
        return first + [n for n in names if n not in first]
    return names


def plot_training_curves(history, path, title=None):
    """One panel per metric of ``history`` (name -> per-epoch values), x = epoch.

    ``loss`` comes first and, when the history has it (``EpochSummary`` logs it
    every epoch), ``learning_rate`` right beside it.

    Epochs are 1-based unless ``history["epoch"]`` gives them. Non-finite
    values (e.g. kNN accuracy on epochs where it was not computed) are skipped,
    so sparse metrics are drawn as connected markers. Saves a PNG, returns ``path``.
    """
    if not hasattr(history, "items"):
        raise ValueError(f"history must be a dict. Received: {type(history).__name__}")
    explicit_epochs = None
    if "epoch" in history:
        explicit_epochs = np.asarray(history["epoch"], dtype=np.float64).reshape(-1)
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
        if explicit_epochs is not None and values.size != explicit_epochs.size:
            raise ValueError(f"history[{name!r}] has {values.size} values but "
                             f"history['epoch'] has {explicit_epochs.size}.")
        series[name] = values
    if not series:
        raise ValueError("history has no non-empty metric to plot.")
    series = {name: series[name] for name in _panel_order(series)}
    columns = min(3, len(series))
    rows = math.ceil(len(series) / columns)
    figure = _new_figure((4.5 * columns, 3.3 * rows))
    axes = np.atleast_1d(figure.subplots(rows, columns, squeeze=False)).reshape(-1)
    for axis, (name, values) in zip(axes, series.items()):
        epochs = (explicit_epochs if explicit_epochs is not None
                  else np.arange(1, values.size + 1, dtype=np.float64))
        finite = np.isfinite(values)
        if finite.any():
            axis.plot(epochs[finite], values[finite], marker="o" if finite.sum() < 30 else None,
                      markersize=3)
        else:
            axis.text(0.5, 0.5, "no finite values", ha="center", va="center",
                      transform=axis.transAxes)
        axis.set(title=name, xlabel="epoch")
        axis.grid(True, alpha=0.3)
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for axis in axes[len(series):]:
        axis.set_visible(False)
    if title:
        figure.suptitle(title)
    return _save(figure, path)


def plot_bar_chart(rows, path, metrics=("probe_top1", "knn_accuracy"), title=None):
    """Grouped bars: one group per row (``row["name"]``), one bar per metric.

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
        names.append(str(row["name"]))

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
    figure = _new_figure((max(5.0, 1.3 * len(rows) * max(1, len(table)) ** 0.5 + 2), 4.5))
    axis = figure.subplots()
    x = np.arange(len(rows))
    width = 0.8 / len(table)
    for j, (metric, values) in enumerate(table.items()):
        finite = np.isfinite(values)
        offset = (j - (len(table) - 1) / 2) * width
        bars = axis.bar(x[finite] + offset, values[finite], width, label=metric)
        axis.bar_label(bars, fmt="%.3g", fontsize=7)
    axis.set_xticks(x, names, rotation=30 if len(rows) > 4 else 0, ha="right"
                    if len(rows) > 4 else "center")
    axis.set_ylabel("value")
    axis.legend()
    axis.grid(True, axis="y", alpha=0.3)
    if title:
        axis.set_title(title)
    return _save(figure, path)
