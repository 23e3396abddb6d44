"""One run end to end: pre-training, linear evaluation, results folder.

``train(config, name)`` is what ``train.py`` calls after parsing its flags, and
what a notebook calls directly. ``evaluate(run_dir)`` is what ``test.py`` calls;
it reads the results folder only and never re-trains.

Results folder ``RESULTS_DIR/NAME/``::

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
import time

import keras
import numpy as np

import backends
from config import PROBE_FIELDS, Config
from experiments import callbacks as cb
from experiments import console, eigenspace, safe_io, visualisation
from experiments.metrics import knn_accuracy
from models import METHOD_CLASSES, build_model, build_optimizer
from models.classifier import extract_features, fit_linear_probe, topk_accuracy

RESULTS_FORMAT_VERSION = 1
EIGENSPACE_PROBE_EXAMPLES = 1024


def check_backend(config):
    """The module of the Keras backend (:func:`backends.get`: TensorFlow or JAX) after
    checking, before anything is touched, that it can run ``config`` (its
    ``check_run``: under JAX one device and an in-memory dataset)."""
    backend = backends.get()
    backend.check_run(config)
    return backend


class RunDirectory:
    """Paths inside one results folder."""

    def __init__(self, results_dir, name):
        if not name or os.sep in name or name in (".", ".."):
            raise ValueError(f"Invalid run name {name!r}: use a plain folder name.")
        self.root = os.path.join(results_dir, name)

    @classmethod
    def from_path(cls, run_dir):
        """The RunDirectory of an existing folder path ``RESULTS_DIR/NAME``."""
        run_dir = os.path.normpath(run_dir)
        return cls(os.path.dirname(run_dir), os.path.basename(run_dir))

    def __getattr__(self, item):
        files = {
            "run_json": "run.json", "config_json": "config.json",
            "encoder_weights": "encoder.weights.h5", "encoder_model": "encoder.keras",
            "siamese_weights": "siamese.weights.h5",
            "classifier": os.path.join("classifier", "classifier.keras"),
            "history": "history.csv",
            "metrics": "metrics.json", "logs": "logs", "checkpoint": "checkpoint",
            "eigenspace": "eigenspace_results", "curves_png": "training_curves.png",
            "eigenspace_png": "eigenspace.png",
        }
        if item not in files:
            raise AttributeError(item)
        return os.path.join(self.root, files[item])


def _run_info(status, **extra):
    return {"format_version": RESULTS_FORMAT_VERSION, "status": status, **extra}


def _set_status(run, status, **extra):
    safe_io.write_json(run.run_json, _run_info(status, **extra))


def read_run(run_dir):
    """Validates a results folder; returns ``(run_info, Config)``.

    Raises ``ValueError`` (one line) for a missing folder, a folder that is not a
    run, or a run written by an incompatible version of this package.
    """
    run = RunDirectory.from_path(run_dir)
    run_json = run.run_json
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
        with open(run.config_json) as f:
            config = Config.from_json(f.read())
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"Cannot read the config of {run_dir!r}: {error}") from None
    return info, config


def config_differences(saved, new):
    """``"field (saved X, now Y), ..."`` for every field in which two Configs differ
    ("" if none); the field ``name`` is called what it is, the ``factory``."""
    saved, new = saved.to_dict(), new.to_dict()
    return ", ".join(f"{'factory' if k == 'name' else k} (saved {v!r}, now {new[k]!r})"
                     for k, v in saved.items() if new[k] != v)


def _check_resume(run, config, resume, overwrite):
    """For ``--resume``: the saved run info after checking the config is the same
    (but for :data:`config.PROBE_FIELDS` of a run that is not complete: the new values are
    saved to config.json)."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other.")
    if not resume:
        return None
    info, saved = read_run(run.root)
    if info["status"] != "complete":
        saved = saved.replace(**{k: getattr(config, k) for k in PROBE_FIELDS})
    differences = config_differences(saved, config)
    if differences:
        raise ValueError(f"Cannot resume {run.root!r} with a different config; "
                         f"fields differ: {differences}")
    return info


def _prepare_directory(run, config, resume, overwrite):
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
        safe_io.write_json(os.path.join(staging, "run.json"), _run_info("pretraining"))
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


def _needs_labels(config):
    return METHOD_CLASSES[config.method].needs_labels


def _pretrain_examples(config, data):
    """Size of the pre-training set (the labelled split for SupCon)."""
    return data.num_train if _needs_labels(config) else data.num_pretrain


def _check_replicas(config, strategy):
    replicas = strategy.num_replicas_in_sync
    if config.batch_size % replicas:
        raise ValueError(f"batch_size is the global batch and must be divisible by the "
                         f"{replicas} replicas of strategy {config.strategy!r}. "
                         f"Received: batch_size={config.batch_size}")


def _pretrain(run, config, data, verbose, extra_callbacks, strategy, backend):
    """Pre-trains from the last checkpoint of ``run`` (or from scratch) to
    ``config.epochs_pretraining``; saves the final weights. Returns the encoder."""
    steps = _pretrain_examples(config, data) // config.batch_size
    # Model, optimizer and metrics live on every replica; Keras's fit then
    # distributes the tf.data batches by itself.
    with strategy.scope():
        model = build_model(config)
        model.compile(optimizer=build_optimizer(config, steps_per_epoch=steps),
                      jit_compile=config.jit_compile)
        model.set_total_steps(steps * config.epochs_pretraining, steps_per_epoch=steps)
        if not model.optimizer.built:
            # Built now, on the variables in the order the backend's train step passes
            # them (the JAX step checks it), so that a checkpoint can be restored.
            model.optimizer.build(backend.trained_variables(model))
    checkpoint = cb.RunCheckpoint(run.checkpoint,
                                  on_saved=lambda rows: _write_history(run, rows))
    start = checkpoint.restore(model)
    if start:
        if verbose:
            print(f"{os.path.basename(run.root)}: resuming after epoch {start}/"
                  f"{config.epochs_pretraining}", flush=True)
    train_eval = backend.evaluation_dataset(data.train, config)
    test_eval = backend.evaluation_dataset(data.test, config)
    # Order matters: everything that adds to an epoch's logs, then the checkpoint,
    # then the epoch's log line (printed once the checkpoint is on disk).
    callbacks = [
        cb.NonFiniteLossGuard(checkpoint),
        cb.KNNMonitor(train_eval, test_eval, data.num_classes, config.knn_every,
                      k=config.knn_k, temperature=config.knn_temperature,
                      total_epochs=config.epochs_pretraining),
        cb.LearningRateLogger(),
    ]
    if config.eigenspace:
        records = []
        if os.path.exists(os.path.join(run.eigenspace, eigenspace.NPZ_NAME)):
            records = [r for r in eigenspace.load_eigenspace(run.eigenspace)
                       if r["epoch"] <= start]
        probe = backend.probe_images(data, config, EIGENSPACE_PROBE_EXAMPLES)
        callbacks.append(cb.EigenspaceTracker(probe, run.eigenspace,
                                              every=config.eigenspace_every,
                                              records=records,
                                              total_epochs=config.epochs_pretraining))
    callbacks += [*extra_callbacks, checkpoint,
                  cb.EpochSummary(config.epochs_pretraining, config.projection_dim,
                                  verbose=verbose, steps_per_epoch=steps)]
    if backend.WRITES_TENSORBOARD:  # Keras's TensorBoard callback writes with tf.summary
        callbacks.append(keras.callbacks.TensorBoard(run.logs))
    began = time.time()
    if start < config.epochs_pretraining:
        # Epochs start..E-1 back to back; each epoch's order and augmentation draws
        # are a function of (seed, epoch, step), so a resumed run sees what the
        # uninterrupted one saw.
        pretrain_data = backend.distribute_dataset(backend.pretraining_dataset(
            data, config, with_labels=_needs_labels(config), epoch=start,
            stop_epoch=config.epochs_pretraining), strategy)
        model.fit(pretrain_data, epochs=config.epochs_pretraining, initial_epoch=start,
                  steps_per_epoch=steps, callbacks=callbacks, verbose=0,  # EpochSummary
                  shuffle=False)  # the pipeline orders the batches itself
    safe_io.save_via_scratch(run.encoder_weights, model.online_encoder.save_weights)
    safe_io.save_via_scratch(run.encoder_model, model.online_encoder.save)
    safe_io.save_via_scratch(run.siamese_weights, model.save_weights)
    _set_status(run, "pretrained", pretrain_seconds=time.time() - began)
    return model.online_encoder


def _read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _pretrain_rows(run):
    """The pre-training rows of ``history.csv`` (``{"epoch": int, metric: str}``)."""
    rows = []
    for row in _read_csv(run.history):
        if row.pop("phase") == "pretrain":
            rows.append({**row, "epoch": int(row["epoch"])})
    return rows


def _write_history(run, pretrain_rows, probe_history=None):
    """Writes ``history.csv``: one ``pretrain`` row per pre-training epoch (from the
    checkpoint, so never a duplicate), then the probe's per-epoch metrics
    (``probe`` rows). Returns the rows."""
    rows = [{"phase": "pretrain", **r, "epoch": int(r["epoch"])} for r in pretrain_rows]
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


def evaluate_classifier(classifier, test_dataset):
    """Top-1/top-5 of a classifier on ``(images, labels)`` batches."""
    logits, labels = [], []
    for images, y in test_dataset:
        logits.append(np.asarray(classifier(images, training=False)))
        labels.append(np.asarray(y))
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    return topk_accuracy(logits, labels, 1), topk_accuracy(logits, labels, 5)


def _figure_title(run_dir):
    """``NAME: factory (method=..., predictor=...)`` from the run's config.json, if readable."""
    name = os.path.basename(os.path.normpath(run_dir))
    try:
        with open(RunDirectory.from_path(run_dir).config_json) as f:
            config = Config.from_json(f.read())
    except (OSError, ValueError, TypeError):
        return name, None
    return f"{name}: {config.name} ({config.describe()})", config


def run_curves_figure(run_dir, heading=None):
    """The training-curves Figure of a results folder (``None`` without history.csv):
    each phase's columns of history.csv in its own panels. ``heading``: the
    ``(title, config)`` of :func:`_figure_title`, read from config.json when None."""
    run = RunDirectory.from_path(run_dir)
    if not os.path.exists(run.history):
        return None
    title, config = heading or _figure_title(run_dir)
    rows = _read_csv(run.history)
    reference = 1.0 / math.sqrt(config.projection_dim) if config else None
    num_classes = None
    if os.path.exists(run.metrics):  # chance level on the accuracy panels
        try:
            with open(run.metrics) as f:
                num_classes = json.load(f).get("num_classes")
        except (OSError, ValueError):
            pass
    return visualisation.training_curves_figure(
        history_columns(rows, "pretrain"), probe=history_columns(rows, "probe"), title=title,
        z_std_reference=reference, num_classes=num_classes)


def draw_figures(run_dir):
    """Training-curve and eigenspace PNGs from the files of a results folder."""
    run = RunDirectory.from_path(run_dir)
    heading = _figure_title(run_dir)  # config.json read once for both figures
    drawn = []
    figure = run_curves_figure(run_dir, heading)
    if figure is not None:
        drawn.append(visualisation.save_figure(figure, run.curves_png))
    if os.path.isdir(run.eigenspace):
        records = eigenspace.load_eigenspace(run.eigenspace)
        drawn.append(visualisation.plot_eigenspace(records, run.eigenspace_png,
                                                   title=heading[0]))
    return drawn


def train(config, name, *, results_dir="results", resume=False, overwrite=False,
          verbose=1, callbacks=()):
    """Pre-trains, fits the linear probe and fills ``results_dir/name``.

    Every input is validated (config, dataset) before an existing folder is
    touched. Returns the metrics written to ``metrics.json``.

    Pre-training runs under ``config.strategy`` (``experiments/distribute.py``).
    With ``multiworker`` every worker runs the same program; only the chief writes
    ``results_dir/name``, the others write to a scratch folder that is deleted at
    the end (to ``--resume``, they copy the chief's folder: a shared filesystem).
    """
    if not isinstance(config, Config):
        raise ValueError(f"train needs a Config. Received: {type(config).__name__}")
    backend = check_backend(config)
    strategy = backend.make_strategy(config.strategy)  # before any other TensorFlow work
    if backend.is_chief(strategy):
        return _train(config, name, strategy, backend, results_dir, resume, overwrite,
                      verbose, callbacks)
    scratch = tempfile.mkdtemp(prefix="nc_ssl_worker_")
    try:
        chief_folder = RunDirectory(results_dir, name).root
        if resume and os.path.isdir(chief_folder):
            shutil.copytree(chief_folder, RunDirectory(scratch, name).root)
        return _train(config, name, strategy, backend, scratch, resume, overwrite, verbose,
                      callbacks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config, name, strategy, backend, results_dir, resume, overwrite, verbose,
           callbacks):
    run = RunDirectory(results_dir, name)
    info = _check_resume(run, config, resume, overwrite)
    if info is not None and info["status"] == "complete":
        # Nothing to do, and nothing is touched.
        with open(run.metrics) as f:
            return {**json.load(f), "already_complete": True}
    safe_io.check_writable(run.root)
    keras.utils.set_random_seed(config.seed)
    _check_replicas(config, strategy)
    # Every data check (classes, decodable images, sizes) runs here, before the
    # results folder is created or touched.
    data = backend.load_dataset(config, progress=console.image_counter() if verbose else None)
    # Validates batch vs. dataset size before the folder is touched.
    backend.pretraining_dataset(data, config, with_labels=_needs_labels(config))
    status = _prepare_directory(run, config, resume, overwrite)
    started = time.time()
    if status == "pretraining":
        encoder = _pretrain(run, config, data, verbose, callbacks, strategy, backend)
    else:
        encoder = keras.models.load_model(run.encoder_model)
    test_eval = backend.evaluation_dataset(data.test, config)
    # Features of the un-augmented images, computed once for the probe and the final kNN.
    train_features = extract_features(encoder, backend.evaluation_dataset(data.train, config))
    test_features = extract_features(encoder, test_eval)
    classifier, probe = fit_linear_probe(
        encoder, train_features, test_features, data.num_classes,
        epochs=config.epochs_finetuning, learning_rate=config.probe_learning_rate,
        weight_decay=config.probe_weight_decay, batch_size=config.probe_batch_size,
        seed=config.seed, verbose=verbose, protocol=config.probe_protocol)
    safe_io.save_via_scratch(run.classifier, classifier.save)
    rows = _write_history(run, _pretrain_rows(run), probe)
    pretrain = history_columns(rows, "pretrain")
    top1, top5 = evaluate_classifier(classifier, test_eval)
    knn = None
    if config.knn_every > 0:  # also for a run without pre-training (the random-init floor)
        knn = knn_accuracy(*train_features, *test_features, data.num_classes,
                           k=config.knn_k, temperature=config.knn_temperature)
    metrics = {
        "name": name, "config": config.name, "top1": top1, "top5": top5,
        # The official code's figure: the best epoch's top-1, chosen on the test split.
        "best_test_top1_test_selected": probe["best_test_top1"],
        "best_test_top1_epoch_test_selected": probe["best_test_top1_epoch"],
        "probe_protocol": probe["protocol"],
        "knn_accuracy": knn,
        "z_std": pretrain["z_std"][-1] if pretrain.get("z_std") else None,
        "pretrain_loss": pretrain["loss"][-1] if pretrain.get("loss") else None,
        "eval_split": data.eval_split,
        "num_classes": data.num_classes, "num_test": data.num_test,
        "replicas": strategy.num_replicas_in_sync,
        "seconds": time.time() - started,
    }
    safe_io.write_json(run.metrics, metrics)
    draw_figures(run.root)
    _set_status(run, "complete")
    shutil.rmtree(run.checkpoint, ignore_errors=True)
    return metrics


def probe_summary(metrics):
    """The probe's two figures in words, as train.py and test.py print them: the clean
    final top-1 and the official protocol's test-selected best epoch."""
    split = metrics.get("eval_split", "test")
    text = (f"linear probe ({metrics.get('probe_protocol', 'official')}): {split} top-1 "
            f"{metrics['top1']:.4f} (final epoch), top-5 {metrics['top5']:.4f}")
    if metrics.get("best_test_top1_test_selected") is not None:
        text += (f"; test-selected best top-1 {metrics['best_test_top1_test_selected']:.4f} "
                 f"(epoch {metrics['best_test_top1_epoch_test_selected']}, the official "
                 f"code's figure: chosen on the {split} split, not a clean estimate)")
    return text


def evaluate(run_dir, only_vis=False):
    """What ``test.py`` does: re-evaluates the saved classifier on the test split
    and draws the figures. Returns ``{"top1", "top5", "figures"}``."""
    info, config = read_run(run_dir)
    backend = check_backend(config)
    result = {}
    if not only_vis:
        classifier_path = RunDirectory.from_path(run_dir).classifier
        if info["status"] != "complete" or not os.path.exists(classifier_path):
            raise ValueError(f"{run_dir!r} has no fitted classifier (run status: "
                             f"{info['status']}); finish it with train.py --resume.")
        classifier = keras.models.load_model(classifier_path)
        data = backend.load_dataset(config)
        result["top1"], result["top5"] = evaluate_classifier(
            classifier, backend.evaluation_dataset(data.test, config))
        result["eval_split"] = data.eval_split
        metrics_path = RunDirectory.from_path(run_dir).metrics
        if os.path.exists(metrics_path):  # the probe's recorded test-selected figure
            with open(metrics_path) as f:
                recorded = json.load(f)
            result.update({k: recorded[k] for k in (
                "best_test_top1_test_selected", "best_test_top1_epoch_test_selected",
                "probe_protocol") if k in recorded})
    result["figures"] = draw_figures(run_dir)
    return result
