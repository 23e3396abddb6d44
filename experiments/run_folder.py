"""The results folder of one run: its layout, ``run.json`` status, the resume and
overwrite checks, and ``history.csv``. Imports no Keras (``train.py`` checks its
``--resume`` flags with it before Keras starts).

Results folder ``RESULTS_DIR/NAME/`` (the attributes of :class:`RunDirectory`)::

    run.json                 format version and status (pretraining -> pretrained -> complete)
    config.json              the effective Config
    encoder.weights.h5       online encoder weights; encoder.keras: loadable model
    siamese.weights.h5       the whole pre-training model (target, predictor, F, queue)
    classifier/classifier.keras   encoder + standardisation + linear layer
    history.csv              every pre-training and probe metric per epoch (``phase``
                             pretrain / probe); during pre-training it holds the epochs
                             of the last checkpoint, one row each
    checkpoint/              state.json + state-EPOCH.npz: the full training state of the
                             last completed epoch (removed when the run is complete)
    metrics.json             final test top-1/top-5 (and the test-selected best, labelled)
    logs/                    TensorBoard
    eigenspace_results/      eigenspace.npz + eigenspace.json (with config.eigenspace)
    training_curves.png, eigenspace.png
"""

import csv
import io
import json
import math
import os
import shutil
import tempfile

from config import PROBE_FIELDS, Config
from experiments import safe_io

RESULTS_FORMAT_VERSION = 1


class RunDirectory:
    """The paths inside one results folder ``RESULTS_DIR/NAME`` (nothing is read or made)."""

    def __init__(self, results_dir, name):
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"Invalid run name {name!r}: use a plain folder name.")
        root = os.path.join(results_dir, name)
        self.root = root
        self.run_json = os.path.join(root, "run.json")  # format version and status
        self.config_json = os.path.join(root, "config.json")  # the effective Config
        self.encoder_weights = os.path.join(root, "encoder.weights.h5")
        self.encoder_model = os.path.join(root, "encoder.keras")  # the loadable encoder
        self.siamese_weights = os.path.join(root, "siamese.weights.h5")
        self.classifier = os.path.join(root, "classifier", "classifier.keras")
        self.history = os.path.join(root, "history.csv")
        self.metrics = os.path.join(root, "metrics.json")
        self.logs = os.path.join(root, "logs")  # TensorBoard
        self.checkpoint = os.path.join(root, "checkpoint")  # the last epoch's state
        self.eigenspace = os.path.join(root, "eigenspace_results")
        self.curves_png = os.path.join(root, "training_curves.png")
        self.eigenspace_png = os.path.join(root, "eigenspace.png")

    @classmethod
    def from_path(cls, run_dir):
        """The RunDirectory of an existing folder path ``RESULTS_DIR/NAME``."""
        run_dir = os.path.normpath(run_dir)
        return cls(os.path.dirname(run_dir), os.path.basename(run_dir))


# ---- run.json ----------------------------------------------------------------------------

def run_info(status, **extra):
    """The content of ``run.json``."""
    return {"format_version": RESULTS_FORMAT_VERSION, "status": status, **extra}


def set_status(run, status, **extra):
    """Writes ``run.json`` with ``status`` (pretraining, pretrained, complete)."""
    safe_io.write_json(run.run_json, run_info(status, **extra))


def read_run(run_dir):
    """Validates a results folder; returns ``(run_info, Config)``.

    Raises ``ValueError`` (one line) for a missing folder, a folder that is not a
    run, or a run written by an incompatible version of this package.
    """
    run_json = RunDirectory.from_path(run_dir).run_json
    if not os.path.isdir(run_dir):
        raise ValueError(f"No results folder at {run_dir!r}.")
    if not os.path.isfile(run_json):
        raise ValueError(f"{run_dir!r} is not a results folder of this package "
                         "(no run.json).")
    try:
        with open(run_json) as f:
            info = json.load(f)
        version = info["format_version"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Corrupt {run_json!r}: {error}") from None
    if version != RESULTS_FORMAT_VERSION:
        raise ValueError(f"{run_dir!r} was written in results format {version}; this "
                         f"version of the package reads format {RESULTS_FORMAT_VERSION}.")
    try:
        with open(RunDirectory.from_path(run_dir).config_json) as f:
            config = Config.from_json(f.read())
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read the config of {run_dir!r}: {error}") from None
    return info, config


def read_metrics(run):
    """The content of ``metrics.json``."""
    with open(run.metrics) as f:
        return json.load(f)


# ---- resume and overwrite ----------------------------------------------------------------

def _differences(refused):
    """``"field (saved X, now Y), ..."``; the field ``name`` is called the ``factory``."""
    return ", ".join(f"{'factory' if k == 'name' else k} (saved {old!r}, now {new!r})"
                     for k, old, new in refused)


def config_differences(saved, new):
    """``"field (saved X, now Y), ..."`` for every field in which two Configs differ
    ("" if none); the field ``name`` is called what it is, the ``factory``."""
    new = new.to_dict()
    return _differences([(k, v, new[k]) for k, v in saved.to_dict().items() if new[k] != v])


def resumed_config(run_dir, changes):
    """The one check of ``--resume``: reads the run (:func:`read_run`) and holds
    ``changes`` (``(field, value)`` pairs) against its saved Config. Returns
    ``(run_info, config, refused)``: ``config`` is the saved Config with the changes a
    resume may make (:data:`config.PROBE_FIELDS` of a run that is not complete);
    ``refused`` the ``(field, saved, new)`` of every other change that differs."""
    if not os.path.isdir(run_dir):
        raise ValueError(f"No results folder at {run_dir!r}. Nothing to resume; start the "
                         "run without --resume.")
    info, saved = read_run(run_dir)
    probe, refused = {}, []
    for field, value in changes:
        old = getattr(saved, field)
        if old == value:
            continue
        if field in PROBE_FIELDS and info["status"] != "complete":
            probe[field] = value
        else:
            refused.append((field, old, value))
    return info, saved.replace(**probe) if probe else saved, refused


def check_resume(run, config, resume, overwrite):
    """For ``--resume``: the saved run info after checking ``config`` is the saved one
    (:func:`resumed_config`); None without ``resume``."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other.")
    if not resume:
        return None
    info, _, refused = resumed_config(run.root, config.to_dict().items())
    if refused:
        raise ValueError(f"Cannot resume {run.root!r} with a different config; "
                         f"fields differ: {_differences(refused)}")
    return info


def prepare_directory(run, config, resume, overwrite):
    """Creates the folder of a new run (or validates a resumed one); returns the
    status of the run. A new folder is staged under a temporary name and renamed
    into place, so a failing write leaves no half-made folder and ``--overwrite``
    replaces the old folder only once the new one exists."""
    if resume:
        status = read_run(run.root)[0]["status"]
        if status != "complete":  # the probe's fields may have changed (PROBE_FIELDS)
            safe_io.write_text(run.config_json, config.to_json())
        return status
    exists = os.path.exists(run.root)
    if exists and not overwrite:
        raise ValueError(f"{run.root!r} exists; pass --overwrite to replace it or "
                         "--resume to continue it.")
    parent = os.path.dirname(run.root) or "."
    name = os.path.basename(run.root)
    staging = None
    try:
        os.makedirs(parent, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=f".{name}.new-", dir=parent)
        os.chmod(staging, 0o755)
        safe_io.write_text(os.path.join(staging, "config.json"), config.to_json())
        safe_io.write_json(os.path.join(staging, "run.json"), run_info("pretraining"))
        if exists:
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.replace(run.root, os.path.join(old, name))
            os.replace(staging, run.root)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, run.root)
        staging = None
    except safe_io.WriteError:
        raise
    except OSError as error:
        raise safe_io.WriteError(error.filename or run.root, error) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return "pretraining"


# ---- history.csv -------------------------------------------------------------------------

def read_history(run):
    """The rows of ``history.csv`` as written (strings; [] without the file)."""
    if not os.path.exists(run.history):
        return []
    with open(run.history, newline="") as f:
        return list(csv.DictReader(f))


def pretrain_rows(run):
    """The pre-training rows of ``history.csv`` (``{"epoch": int, metric: str}``)."""
    rows = []
    for row in read_history(run):
        if row.pop("phase") == "pretrain":
            rows.append({**row, "epoch": int(row["epoch"])})
    return rows


def write_history(run, pretrain, probe_history=None):
    """Writes ``history.csv``: one ``pretrain`` row per pre-training epoch (from the
    checkpoint, so never a duplicate), then the probe's per-epoch metrics
    (``probe`` rows). Returns the rows."""
    rows = [{"phase": "pretrain", **r, "epoch": int(r["epoch"])} for r in pretrain]
    if probe_history:
        keys = [k for k in probe_history if isinstance(probe_history[k], list)]
        for e in range(len(probe_history[keys[0]])):
            rows.append({"phase": "probe", "epoch": e + 1,
                         **{k: probe_history[k][e] for k in keys}})
    columns = ["phase", "epoch"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    safe_io.write_text(run.history, text.getvalue())
    return rows


def history_columns(rows, phase):
    """``{metric: [float per epoch]}`` of one phase of ``history.csv`` rows. A column with
    no value in that phase (the other phase's metrics) is left out."""
    out = {}
    for row in rows:
        if row["phase"] != phase:
            continue
        for k, v in row.items():
            if k in ("phase", "epoch"):
                continue
            out.setdefault(k, []).append(float(v) if v not in ("", None) else math.nan)
    return {k: v for k, v in out.items() if any(not math.isnan(x) for x in v)}
