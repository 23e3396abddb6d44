"""One run end to end: pre-training, linear evaluation, results folder.

``train(config, name)`` is what ``train.py`` calls after parsing its flags, and
what a notebook calls directly. It runs these steps, each a function a notebook can
call on its own::

    backend = check_backend(config)                    # the Keras backend can run it
    strategy = backend.make_strategy(config.strategy)
    run = RunDirectory(results_dir, name)              # experiments/run_folder.py
    check_resume(run, config, resume, overwrite)       # (run_folder) before anything
    data = load_data(config, backend)                  # every data check
    prepare_directory(run, config, resume, overwrite)  # (run_folder) the folder
    encoder = pretrain(run, config, data, backend, strategy)
    classifier, probe, scores = fit_probe(encoder, config, data, backend)
    write_results(run, config, data, classifier, probe, scores)  # + figures, complete

``evaluate(run_dir)`` is what ``test.py`` calls; it reads the results folder only and
never re-trains. The folder's layout, ``run.json``, the resume checks and
``history.csv`` are :mod:`experiments.run_folder`; its figures
:mod:`experiments.visualisation`.
"""

import json
import os
import shutil
import tempfile
import time

import keras
import numpy as np

import backends
from config import Config
from experiments import callbacks as cb
from experiments import checkpoint as ckpt
from experiments import console, eigenspace, run_folder, safe_io, visualisation
from experiments.metrics import knn_accuracy
from models import METHOD_CLASSES, build_model, build_optimizer
from models.classifier import extract_features, fit_linear_probe, topk_accuracy

EIGENSPACE_PROBE_EXAMPLES = 1024


def check_backend(config):
    """The module of the Keras backend (:func:`backends.get`: TensorFlow or JAX) after
    checking, before anything is touched, that it can run ``config`` (its
    ``check_run``: under JAX one device and an in-memory dataset)."""
    backend = backends.get()
    backend.check_run(config)
    return backend


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


def load_data(config, backend, verbose=0):
    """Step 2 of a run: the dataset of ``config`` (``backend.load_dataset``), after every
    data check (classes, decodable images, sizes, batch vs. dataset size), so that a
    bad input fails before the results folder is created or touched."""
    data = backend.load_dataset(config, progress=console.image_counter() if verbose else None)
    backend.pretraining_dataset(data, config, with_labels=_needs_labels(config))
    return data


def pretrain(run, config, data, backend, strategy, *, verbose=1, callbacks=()):
    """Step 3 of a run: pre-trains from the last checkpoint of ``run`` (or from scratch)
    to ``config.epochs_pretraining`` under ``strategy`` (``backend.make_strategy``);
    extra Keras ``callbacks`` run before the checkpoint. Saves the final weights and
    marks the run ``pretrained``. Returns the online encoder."""
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
    checkpoint = ckpt.RunCheckpoint(run.checkpoint,
                                  on_saved=lambda rows: run_folder.write_history(run, rows))
    start = checkpoint.restore(model)
    if start:
        if verbose:
            print(f"{os.path.basename(run.root)}: resuming after epoch {start}/"
                  f"{config.epochs_pretraining}", flush=True)
    train_eval = backend.evaluation_dataset(data.train, config)
    test_eval = backend.evaluation_dataset(data.test, config)
    # Order matters: everything that adds to an epoch's logs, then the checkpoint,
    # then the epoch's log line (printed once the checkpoint is on disk).
    monitors = [
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
        monitors.append(cb.EigenspaceTracker(probe, run.eigenspace,
                                             every=config.eigenspace_every,
                                             records=records,
                                             total_epochs=config.epochs_pretraining))
    monitors += [*callbacks, checkpoint,
                  cb.EpochSummary(config.epochs_pretraining, config.projection_dim,
                                  verbose=verbose, steps_per_epoch=steps)]
    if backend.WRITES_TENSORBOARD:  # Keras's TensorBoard callback writes with tf.summary
        monitors.append(keras.callbacks.TensorBoard(run.logs))
    began = time.time()
    if start < config.epochs_pretraining:
        # Epochs start..E-1 back to back; each epoch's order and augmentation draws
        # are a function of (seed, epoch, step), so a resumed run sees what the
        # uninterrupted one saw.
        pretrain_data = backend.distribute_dataset(backend.pretraining_dataset(
            data, config, with_labels=_needs_labels(config), epoch=start,
            stop_epoch=config.epochs_pretraining), strategy)
        model.fit(pretrain_data, epochs=config.epochs_pretraining, initial_epoch=start,
                  steps_per_epoch=steps, callbacks=monitors, verbose=0,  # EpochSummary
                  shuffle=False)  # the pipeline orders the batches itself
    safe_io.save_via_scratch(run.encoder_weights, model.online_encoder.save_weights)
    safe_io.save_via_scratch(run.encoder_model, model.online_encoder.save)
    safe_io.save_via_scratch(run.siamese_weights, model.save_weights)
    run_folder.set_status(run, "pretrained", pretrain_seconds=time.time() - began)
    return model.online_encoder


def fit_probe(encoder, config, data, backend, *, verbose=0):
    """Step 4 of a run: the linear probe on the frozen ``encoder``'s features of the
    un-augmented images (computed once, also for the final kNN). Returns
    ``(classifier, probe history, scores)``; ``scores``: ``top1``, ``top5`` of the
    classifier on the test split and ``knn_accuracy`` (None with ``knn_every=0``)."""
    test_eval = backend.evaluation_dataset(data.test, config)
    train_features = extract_features(encoder, backend.evaluation_dataset(data.train, config))
    test_features = extract_features(encoder, test_eval)
    classifier, probe = fit_linear_probe(
        encoder, train_features, test_features, data.num_classes,
        epochs=config.epochs_finetuning, learning_rate=config.probe_learning_rate,
        weight_decay=config.probe_weight_decay, batch_size=config.probe_batch_size,
        seed=config.seed, verbose=verbose, protocol=config.probe_protocol)
    top1, top5 = evaluate_classifier(classifier, test_eval)
    knn = None
    if config.knn_every > 0:  # also for a run without pre-training (the random-init floor)
        knn = knn_accuracy(*train_features, *test_features, data.num_classes,
                           k=config.knn_k, temperature=config.knn_temperature)
    return classifier, probe, {"top1": top1, "top5": top5, "knn_accuracy": knn}


def write_results(run, config, data, classifier, probe, scores, *, replicas=1, started=None):
    """Step 5 of a run: saves the classifier, ``history.csv`` (the checkpoint's
    pre-training rows and the probe's), ``metrics.json`` and the figures, marks the run
    ``complete`` and removes its checkpoint. Returns the metrics."""
    safe_io.save_via_scratch(run.classifier, classifier.save)
    rows = run_folder.write_history(run, run_folder.pretrain_rows(run), probe)
    pretrain = run_folder.history_columns(rows, "pretrain")
    metrics = {
        "name": os.path.basename(run.root), "config": config.name,
        "top1": scores["top1"], "top5": scores["top5"],
        # The official code's figure: the best epoch's top-1, chosen on the test split.
        "best_test_top1_test_selected": probe["best_test_top1"],
        "best_test_top1_epoch_test_selected": probe["best_test_top1_epoch"],
        "probe_protocol": probe["protocol"],
        "knn_accuracy": scores["knn_accuracy"],
        "z_std": pretrain["z_std"][-1] if pretrain.get("z_std") else None,
        "pretrain_loss": pretrain["loss"][-1] if pretrain.get("loss") else None,
        "eval_split": data.eval_split,
        "num_classes": data.num_classes, "num_test": data.num_test,
        "replicas": replicas,
        "seconds": time.time() - started if started is not None else None,
    }
    safe_io.write_json(run.metrics, metrics)
    visualisation.draw_figures(run.root)
    run_folder.set_status(run, "complete")
    shutil.rmtree(run.checkpoint, ignore_errors=True)
    return metrics


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
        chief_folder = run_folder.RunDirectory(results_dir, name).root
        if resume and os.path.isdir(chief_folder):
            shutil.copytree(chief_folder, run_folder.RunDirectory(scratch, name).root)
        return _train(config, name, strategy, backend, scratch, resume, overwrite, verbose,
                      callbacks)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _train(config, name, strategy, backend, results_dir, resume, overwrite, verbose,
           callbacks):
    run = run_folder.RunDirectory(results_dir, name)
    info = run_folder.check_resume(run, config, resume, overwrite)
    if info is not None and info["status"] == "complete":
        # Nothing to do, and nothing is touched.
        return {**run_folder.read_metrics(run), "already_complete": True}
    safe_io.check_writable(run.root)
    keras.utils.set_random_seed(config.seed)
    _check_replicas(config, strategy)
    data = load_data(config, backend, verbose)
    status = run_folder.prepare_directory(run, config, resume, overwrite)
    started = time.time()
    if status == "pretraining":
        encoder = pretrain(run, config, data, backend, strategy, verbose=verbose,
                           callbacks=callbacks)
    else:
        encoder = keras.models.load_model(run.encoder_model)
    classifier, probe, scores = fit_probe(encoder, config, data, backend, verbose=verbose)
    return write_results(run, config, data, classifier, probe, scores,
                         replicas=strategy.num_replicas_in_sync, started=started)


def evaluate_classifier(classifier, test_dataset):
    """Top-1/top-5 of a classifier on ``(images, labels)`` batches."""
    logits, labels = [], []
    for images, y in test_dataset:
        logits.append(np.asarray(classifier(images, training=False)))
        labels.append(np.asarray(y))
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    return topk_accuracy(logits, labels, 1), topk_accuracy(logits, labels, 5)


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
    info, config = run_folder.read_run(run_dir)
    backend = check_backend(config)
    result = {}
    if not only_vis:
        classifier_path = run_folder.RunDirectory.from_path(run_dir).classifier
        if info["status"] != "complete" or not os.path.exists(classifier_path):
            raise ValueError(f"{run_dir!r} has no fitted classifier (run status: "
                             f"{info['status']}); finish it with train.py --resume.")
        classifier = keras.models.load_model(classifier_path)
        data = backend.load_dataset(config)
        result["top1"], result["top5"] = evaluate_classifier(
            classifier, backend.evaluation_dataset(data.test, config))
        result["eval_split"] = data.eval_split
        metrics_path = run_folder.RunDirectory.from_path(run_dir).metrics
        if os.path.exists(metrics_path):  # the probe's recorded test-selected figure
            with open(metrics_path) as f:
                recorded = json.load(f)
            result.update({k: recorded[k] for k in (
                "best_test_top1_test_selected", "best_test_top1_epoch_test_selected",
                "probe_protocol") if k in recorded})
    result["figures"] = visualisation.draw_figures(run_dir)
    return result
