"""Scaled-down reproduction of the paper's CIFAR-10 findings on a CPU.

    python experiments/scripts/reproduce_small.py --data_dir PATH_TO_CIFAR10_FOLDER
    python experiments/scripts/reproduce_small.py --smoke        # every row, synthetic data

Trains the paper's rows (with --family also SimCLR, SupCon, SwAV, MoCo and Barlow
Twins) with one shared scaled-down setting (same encoder width, subset, epochs,
batch and probe), then writes RESULTS_DIR/table.md, table.json and a bar chart. Rows whose
run folder is already complete with the same config are reused; a folder holding another
config stops the script before anything trains (pass --overwrite to redo them).
"""

import json
import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import config as config_lib  # noqa: E402  (after the sys.path line above)
from experiments.reproduction import (FAMILY_ROWS, SCALED_DOWN_ROWS,  # noqa: E402
                                      SUCCESSOR_ROWS, scaled_down_config)

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", None, "Image folder ROOT/{train,test}/<class>/ (CIFAR-10).")
flags.DEFINE_string("results_dir", os.path.join("results", "reproduce_small"),
                    "Where the runs, table.md and figures go.")
flags.DEFINE_boolean("smoke", False, "Every row for a few steps on synthetic data.")
flags.DEFINE_boolean("overwrite", False, "Re-run rows that already completed, and replace "
                     "run folders that hold another config.")
flags.DEFINE_list("rows", None, "Only these rows (default: the paper's rows, plus the "
                  "family's with --family).")
flags.DEFINE_boolean("family", False, "Also the wider family's rows (SimCLR, SupCon, SwAV, "
                     "MoCo, Barlow Twins): about 55 more minutes.")
flags.DEFINE_boolean("successors", False, "Also the DirectPred family's successors' rows "
                     "(DirectSet(alpha), IsoLoss with and without EMA: docs/successors.md).")
flags.DEFINE_float("width", 0.125, "Encoder width multiplier of every row.")
flags.DEFINE_integer("max_train_examples", 10000, "Train subset (pre-training and probe).")
flags.DEFINE_integer("max_test_examples", 2000, "Test subset.")
flags.DEFINE_integer("validation_examples", 0,
                     "Tuning: hold out N of the --max_train_examples as the evaluation split "
                     "instead of the test split (e.g. --max_train_examples 12000 "
                     "--validation_examples 2000 keeps 10k for training).")
flags.DEFINE_integer("epochs", 20, "Pre-training epochs of every pre-trained row.")
flags.DEFINE_integer("probe_epochs", 100, "Linear-probe epochs.")
flags.DEFINE_integer("batch_size", 128, "Pre-training batch size.")
flags.DEFINE_integer("seed", 0, "Seed of every row (the first seed with --seeds).")
flags.DEFINE_multi_string("override", None, "ROW.FIELD=VALUE, repeatable: one more Config "
                          "override of one row, on top of its own (e.g. --override "
                          "directcopy.predictor_eps=0.05); the table shows it. For screening "
                          "variants: give them their own --results_dir.")
flags.DEFINE_integer("seeds", 1, "Runs per row, with seeds --seed, --seed + 1, ...; the table "
                     "shows the mean and the sample standard deviation. Each seed also "
                     "draws its own data subsets and held-out split.")

#: The rows, their overrides and the reason for each: experiments/reproduction.py.
ROWS = SCALED_DOWN_ROWS
ALL_ROWS = ROWS + FAMILY_ROWS + SUCCESSOR_ROWS


def with_overrides(rows, assignments):
    """``rows`` with each ``ROW.FIELD=VALUE`` of ``assignments`` added to that row's
    overrides (parsed as the field's type by :func:`config.parse_assignment`).
    ``ValueError`` for a row that is not in ``rows`` or a bad assignment."""
    names = [r.name for r in rows]
    extra = {}
    for text in assignments or ():
        row, dot, assignment = text.partition(".")
        if not dot or row not in names:
            raise ValueError(f"--override takes ROW.FIELD=VALUE with ROW one of the rows run "
                             f"{names}. Received: --override={text}")
        field, value = config_lib.parse_assignment(assignment)
        extra.setdefault(row, {})[field] = value
    return [row._replace(overrides={**row.overrides, **extra.get(row.name, {})})
            for row in rows]


def shared_settings(smoke):
    """Config overrides shared by every row."""
    if smoke:
        return dict(dataset="synthetic", data_dir=None, image_size=16, width=0.0625,
                    max_train_examples=32 + FLAGS.validation_examples,
                    max_test_examples=None if FLAGS.validation_examples else 16,
                    validation_examples=FLAGS.validation_examples, batch_size=16,
                    epochs_pretraining=1, epochs_finetuning=1, knn_every=1,
                    eigenspace=True, eigenspace_every=1, seed=FLAGS.seed)
    if not FLAGS.data_dir:
        raise ValueError("--data_dir is required (or --smoke): the folder extracted from "
                         "cifar10-jpeg.tar.gz, with train/<class>/ and test/<class>/.")
    return dict(dataset="folder", data_dir=FLAGS.data_dir, image_size=32, width=FLAGS.width,
                max_train_examples=FLAGS.max_train_examples,
                max_test_examples=None if FLAGS.validation_examples else FLAGS.max_test_examples,
                validation_examples=FLAGS.validation_examples, batch_size=FLAGS.batch_size,
                epochs_pretraining=FLAGS.epochs, epochs_finetuning=FLAGS.probe_epochs,
                knn_every=FLAGS.epochs, eigenspace=True,
                eigenspace_every=max(1, FLAGS.epochs // 5), seed=FLAGS.seed)


#: (table key, metrics.json key). ``probe_top1_selected`` is the published protocol's
#: figure (the official linear_feature_eval.py: the best test top-1 over the probe epochs,
#: selected on the test set); ``probe_top1`` the clean last-epoch one.
METRICS = (("probe_top1_selected", "best_test_top1_test_selected"), ("probe_top1", "top1"),
           ("probe_top5", "top5"), ("knn_accuracy", "knn_accuracy"), ("z_std", "z_std"),
           ("seconds", "seconds"))


def _mean_std(values):
    """Mean and sample standard deviation (None with one value) of the non-None values."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _saved_metrics(results_dir, run_name, config, overwrite):
    """The metrics of RESULTS_DIR/RUN_NAME if it is a complete run of ``config`` (to
    reuse), else None (to train). A folder holding another config is never replaced
    without ``overwrite``: ``ValueError`` naming the fields that differ."""
    from experiments.run_folder import RunDirectory, config_differences, read_run

    run = RunDirectory(results_dir, run_name)
    if overwrite or not os.path.exists(run.root):
        return None
    info, saved = read_run(run.root)
    differences = config_differences(saved, config)
    if differences:
        raise ValueError(f"{run.root!r} holds a run with another config; fields differ: "
                         f"{differences}. Pass --overwrite to replace it or choose another "
                         "--results_dir.")
    if info["status"] != "complete" or not os.path.exists(run.metrics):
        return None
    with open(run.metrics) as f:
        return json.load(f)


def run_rows(rows, shared, results_dir, overwrite, seeds=1):
    """Trains (or reuses) every row for ``seeds`` seeds; one table entry per row, with its
    mean ± std over the seeds and its gain over the floor (:func:`add_gains_over_floor`).

    The first seed's run folder is RESULTS_DIR/ROW, the others' RESULTS_DIR/ROW_seedN.
    Every folder is checked before anything trains (:func:`_saved_metrics`).
    """
    from experiments.training import train

    first = shared["seed"]
    plan = []
    for row in rows:
        plan.append((row, [(seed, row.name if seed == first else f"{row.name}_seed{seed}",
                            scaled_down_config(row, {**shared, "seed": seed}))
                           for seed in range(first, first + seeds)]))
    saved = {run_name: _saved_metrics(results_dir, run_name, config, overwrite)
             for _, runs in plan for _, run_name, config in runs}
    table = []
    for row_def, planned in plan:
        runs = []
        for seed, run_name, config in planned:
            metrics = saved[run_name]
            if metrics is None:
                metrics = train(config, run_name, results_dir=results_dir, overwrite=True,
                                verbose=0)
            runs.append({"seed": seed, **{key: metrics.get(field) for key, field in METRICS}})
            print(f"{run_name}: top-1 {metrics['top1']:.4f} knn {metrics['knn_accuracy']} "
                  f"z_std {metrics['z_std']} ({metrics['seconds']:.0f} s)", flush=True)
        row = {**row_def._asdict(), "seeds": runs}
        for key, _ in METRICS:
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in runs])
        table.append(row)
    return add_gains_over_floor(table)


def add_gains_over_floor(table, floor="random_init"):
    """Adds each row's gain over the floor row, paired by seed (the seed also draws the train
    and test subsets, so the pair shares them): ``probe_gain``/``knn_gain`` (+ ``_std``) are
    the mean and sample std of the per-seed differences over the seeds both rows have (None
    for the floor itself or without one)."""
    floor_runs = next(({run["seed"]: run for run in row["seeds"]}
                       for row in table if row["name"] == floor), {})
    for row in table:
        pairs = [] if row["name"] == floor else [
            (run, floor_runs[run["seed"]]) for run in row["seeds"] if run["seed"] in floor_runs]
        for key, gain in (("probe_top1", "probe_gain"), ("knn_accuracy", "knn_gain")):
            row[gain], row[f"{gain}_std"] = _mean_std(
                [run[key] - base[key] for run, base in pairs
                 if run[key] is not None and base[key] is not None])
    return table


def _fmt(value, std=None, points=False):
    """``0.3100 ± 0.0158``, or with ``points`` a signed difference in percentage points."""
    if value is None:
        return "n/a"
    scale, digits, sign = (100, 1, "+") if points else (1, 4, "")
    return (f"{scale * value:{sign}.{digits}f}"
            + ("" if std is None else f" ± {scale * std:.{digits}f}"))


def write_table(table, shared, results_dir):
    from experiments.visualisation import plot_bar_chart

    lines = ["| row | factory | probe top-1, test-selected (published protocol) | "
             "probe top-1, last epoch | probe top-5 | kNN top-1 | z-std (final) | "
             "gain over floor: probe / kNN (points) | expected to collapse | wall time (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in table:
        changes = ", ".join(f"{k}={v}" for k, v in row["overrides"].items())
        factory = f"`{row['factory']}`" + (f" ({changes})" if changes else "")
        cells = [_fmt(row[key], std=row[f"{key}_std"])
                 for key in ("probe_top1_selected", "probe_top1", "probe_top5",
                             "knn_accuracy", "z_std")]
        cells.append(" / ".join(_fmt(row[key], row[f"{key}_std"], points=True)
                                for key in ("probe_gain", "knn_gain")))
        lines.append(f"| {row['name']} | {factory} | {' | '.join(cells)} | "
                     f"{'yes' if row['expected_collapse'] else 'no'} | {row['seconds']:.0f} |")
    settings = ", ".join(f"{k}={v}" for k, v in sorted(shared.items()) if k != "data_dir")
    seeds = [str(run["seed"]) for run in table[0]["seeds"]]
    note = (f" Mean ± sample std over seeds {', '.join(seeds)}; wall time is the mean per run."
            if len(seeds) > 1 else "")
    note += (" Test-selected: the best test top-1 over the probe epochs, as the paper's "
             "official protocol reports it (set beside published numbers); last epoch: the "
             "probe's final top-1, free of test-set selection. Gains (last epoch): over "
             "random_init with the same seed (the same train/test subsets), in percentage "
             "points.")
    reasons = [f"- {row['name']}: {row['reason']}." for row in table if row.get("reason")]
    text = "\n".join(lines) + f"\n\nShared settings: {settings}.{note}\n"
    if reasons:
        text += ("\nWhy rows depart from their factory (experiments/reproduction.py):\n"
                 + "\n".join(reasons) + "\n")
    with open(os.path.join(results_dir, "table.md"), "w") as f:
        f.write(text)
    with open(os.path.join(results_dir, "table.json"), "w") as f:
        json.dump({"rows": table, "settings": shared}, f, indent=2)
    floor = "random_init" if any(row["name"] == "random_init" for row in table) else None
    plot_bar_chart(table, os.path.join(results_dir, "table.png"),
                   metrics=("probe_top1", "knn_accuracy"), floor=floor,
                   title=f"Scaled-down CIFAR-10: linear probe and kNN top-1 "
                         f"({len(seeds)} seed{'s' if len(seeds) > 1 else ''})")
    return text


def main(argv):
    from experiments import console
    console.quiet_framework_logs()  # TensorFlow's / XLA's start-up lines, as train.py
    del argv
    try:
        shared = shared_settings(FLAGS.smoke)
        rows = (ROWS + (FAMILY_ROWS if FLAGS.family else ())
                + (SUCCESSOR_ROWS if FLAGS.successors else ()))
        if FLAGS.rows:
            known = [r.name for r in ALL_ROWS]
            unknown = [r for r in FLAGS.rows if r not in known]
            if unknown:
                raise ValueError(f"Unknown rows {unknown}. Valid: {known}")
            rows = [r for r in ALL_ROWS if r.name in FLAGS.rows]
        rows = with_overrides(rows, FLAGS.override)
        if FLAGS.seeds < 1:
            raise ValueError(f"--seeds must be >= 1. Received: --seeds={FLAGS.seeds}")
        os.makedirs(FLAGS.results_dir, exist_ok=True)
        table = run_rows(rows, shared, FLAGS.results_dir, FLAGS.overwrite, FLAGS.seeds)
    except ValueError as error:
        print(f"reproduce_small.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    print(write_table(table, shared, FLAGS.results_dir))


if __name__ == "__main__":
    app.run(main)
