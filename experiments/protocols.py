"""Evaluation protocols of a finished run, on its own data or transferred to another dataset.

``evaluate_protocol(run_dir, protocol, ...)`` is what ``test.py --protocol`` calls. It never
re-trains the run: it reads the saved online encoder (``encoder.keras``), evaluates it and
appends one entry to the run's ``evaluations.json`` (``metrics.json``, train.py's numbers,
is never touched). Protocols:

* ``linear``: the run's own linear probe (``models/classifier.py``: the luckmatters
  protocol, with the run's ``probe_*`` settings) on frozen features of the evaluation view.
* ``knn``: the weighted kNN on the same frozen features (Wu et al. 2018, as the offline kNN
  of solo-learn ``solo/utils/knn.py`` and lightly's ``benchmarks``: cosine similarity,
  ``k=200`` neighbours voting ``exp(sim / T)``, ``T=0.1``).
* ``finetune``: the whole network (encoder + a new linear head) trained with labels by the
  semi-supervised fine-tuning recipe of SimCLR (Chen et al. 2020, arXiv 2002.05709, App.
  B.5): Nesterov momentum 0.9, learning rate 0.05 x batch / 256, no weight decay, no
  warm-up (cosine decay, the ``WarmUpAndCosineDecay`` of google-research/simclr with
  ``warmup_epochs=0``), a zero-initialised head (``zero_init_logits_layer``), random
  crop + horizontal flip only, 60 epochs for 1 % of the labels and 30 for 10 %; BatchNorm
  trains as in SimCLR (batch statistics while training, the moving averages at test).

``labels_fraction`` F picks :func:`labelled_subset` of the labelled training split; the
evaluation is on the whole test split. ``dataset`` / ``data_dir``: another dataset
(resized to the run's image size, normalised as the run was; its own class count).
"""

import datetime
import json
import os

import keras
import numpy as np

from experiments import safe_io
from experiments.metrics import knn_scores
from experiments.pretrained import _saved_encoder, encoder_at_size
from experiments.run_folder import RunDirectory, read_run
from experiments.training import check_backend
from models.classifier import extract_features, fit_linear_probe, topk_accuracy

PROTOCOLS = ("linear", "knn", "finetune")
#: solo-learn's and lightly's offline kNN defaults.
KNN_K, KNN_TEMPERATURE = 200, 0.1
#: SimCLR App. B.5: learning rate = FINETUNE_LR_PER_256 x batch / 256; momentum (Nesterov).
FINETUNE_LR_PER_256, FINETUNE_MOMENTUM = 0.05, 0.9
FINETUNE_BATCH_SIZE = 256
#: SimCLR App. B.5 uses Inception crops (torchvision RandomResizedCrop's defaults).
FINETUNE_CROP_SCALE, FINETUNE_CROP_RATIO = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
#: Which options each protocol uses; any other given option is refused.
PROTOCOL_OPTIONS = {
    "linear": ("epochs",),
    "knn": ("knn_k", "knn_temperature"),
    "finetune": ("epochs", "learning_rate", "batch_size"),
}
EVALUATIONS_FORMAT_VERSION = 1
EVALUATIONS_JSON, EVALUATIONS_PNG = "evaluations.json", "evaluations.png"


def finetune_epochs(labels_fraction):
    """SimCLR App. B.5's epochs: 60 for 1 % of the labels (or fewer), else 30."""
    return 60 if labels_fraction <= 0.01 else 30


def labelled_subset(labels, fraction, seed, class_names=None):
    """Indices (sorted) of a class-balanced, seeded subset of a labelled split.

    Every class ``c`` keeps ``fraction * n_c`` of its ``n_c`` examples, rounded half up
    (on a balanced split the same number per class, as SimCLR's 1 % / 10 % ImageNet subsets):
    the first of a permutation seeded by ``(seed, c)``, so the subset is a pure function
    of ``(labels, fraction, seed)``, a class's choice does not depend on the other
    classes, and a smaller fraction's subset lies inside a larger one's. ``ValueError``
    when a class would keep no example.
    """
    labels = np.asarray(labels).reshape(-1)
    fraction = float(fraction)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"labels_fraction must be in (0, 1]. Received: "
                         f"labels_fraction={fraction!r}")
    keep = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        count = int(np.floor(fraction * len(members) + 0.5))  # rounded half up
        if count < 1:
            name = class_names[c] if class_names is not None else int(c)
            raise ValueError(
                f"labels_fraction={fraction:g} leaves class {name!r} ({len(members)} "
                f"labelled examples) without an example: it needs at least "
                f"{0.5 / len(members):.3g}. Received: labels_fraction={fraction:g}")
        order = np.random.default_rng([int(seed), int(c)]).permutation(len(members))
        keep.append(members[order[:count]])
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def check_options(protocol, **options):
    """``ValueError`` for an unknown protocol or a given option (not None) it ignores."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown protocol {protocol!r}. Valid: {list(PROTOCOLS)}. "
                         f"Received: protocol={protocol!r}")
    ignored = [k for k, v in options.items()
               if v is not None and k not in PROTOCOL_OPTIONS[protocol]]
    if ignored:
        users = {k: [p for p, names in PROTOCOL_OPTIONS.items() if k in names]
                 for k in ignored}
        raise ValueError(
            f"--protocol {protocol} does not use {', '.join('--' + k for k in ignored)} "
            f"(used by {'; '.join(f'--{k}: {users[k]}' for k in ignored)}). Received: "
            + ", ".join(f"{k}={options[k]!r}" for k in ignored))
    for name in ("epochs", "knn_k", "batch_size"):
        if options.get(name) is not None and int(options[name]) < 1:
            raise ValueError(f"{name} must be >= 1. Received: {name}={options[name]!r}")
    for name in ("knn_temperature", "learning_rate"):
        if options.get(name) is not None and not float(options[name]) > 0:
            raise ValueError(f"{name} must be > 0. Received: {name}={options[name]!r}")


# ---------------------------------------------------------------------------
# The data of an evaluation.
# ---------------------------------------------------------------------------

def evaluation_config(config, dataset=None, data_dir=None, image_size=None):
    """The run's Config moved to the evaluation data: another ``dataset`` (read whole:
    no ``max_*`` limits, no validation hold-out) and/or another ``image_size``; the
    run's normalisation is kept (it is the encoder's)."""
    if data_dir is not None and dataset is None:
        raise ValueError("eval_data_dir is the folder of --eval_dataset, which is not "
                         f"given. Received: eval_data_dir={data_dir!r}")
    changes = {}
    if dataset is not None:
        changes.update(dataset=dataset, data_dir=data_dir, max_train_examples=None,
                       max_test_examples=None, validation_examples=0)
    if image_size is not None:
        changes["image_size"] = int(image_size)
    return config.replace(**changes) if changes else config


def _arrays(split):
    """``(uint8 images, int labels)`` NumPy arrays of a split (arrays, or ``tf.data``)."""
    if isinstance(split, tuple):
        return np.asarray(split[0]), np.asarray(split[1]).astype(np.int64)
    images, labels = [], []
    for x, y in split.batch(1024).as_numpy_iterator():
        images.append(x)
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels).astype(np.int64)


def _dataset_label(dataset, data_dir):
    if dataset == "folder" and data_dir:
        return f"folder:{os.path.basename(os.path.normpath(data_dir))}"
    return dataset


# ---------------------------------------------------------------------------
# The protocols.
# ---------------------------------------------------------------------------

def _compiled(fn):
    """``fn`` compiled by the current backend (:func:`backends.get`: ``jit``)."""
    import backends
    return backends.get().jit(fn)


def finetune(encoder, config, train, test, num_classes, *, epochs, learning_rate=None,
             batch_size=FINETUNE_BATCH_SIZE, seed=0, verbose=0):
    """Fine-tunes ``encoder`` (in place) and a new linear head by the SimCLR recipe (module
    docstring). ``train``, ``test``: ``(uint8 images, labels)`` arrays. Returns
    ``(model, result)``: the model maps normalised images to logits; ``result`` holds
    ``top1``, ``top5`` on ``test`` and the ``learning_rate`` / ``batch_size`` used."""
    from data_processing.augment_ops import (NUM_UNIFORMS, AugmentParams,
                                             augment_from_uniforms, eval_transform)
    from data_processing.sources import numpy_seeds
    x, y = train
    batch = min(int(batch_size), len(x))
    steps = len(x) // batch
    learning_rate = float(learning_rate or FINETUNE_LR_PER_256 * batch / 256)
    params = AugmentParams(
        image_size=config.image_size, crop_scale=FINETUNE_CROP_SCALE,
        crop_ratio=FINETUNE_CROP_RATIO, flip_prob=0.5, jitter_prob=0.0, grayscale_prob=0.0,
        blur_prob=0.0, normalize_mean=config.normalize_mean, normalize_std=config.normalize_std)
    augment = _compiled(lambda images, u: augment_from_uniforms(images, u, params))
    keras.utils.set_random_seed(seed)
    encoder.trainable = True
    inputs = keras.Input(tuple(encoder.input.shape[1:]), name="images")
    logits = keras.layers.Dense(num_classes, kernel_initializer="zeros", dtype="float32",
                                name="logits")(encoder(inputs))
    model = keras.Model(inputs, logits, name="finetuned")
    schedule = keras.optimizers.schedules.CosineDecay(learning_rate, epochs * steps)
    model.compile(optimizer=keras.optimizers.SGD(schedule, momentum=FINETUNE_MOMENTUM,
                                                 nesterov=True),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))

    def batches():
        for epoch in range(epochs):
            order = np.random.default_rng(numpy_seeds(seed, epoch)[0]).permutation(len(x))
            for step in range(steps):
                index = np.sort(order[step * batch:(step + 1) * batch])
                u = np.random.default_rng(numpy_seeds(seed, epoch, step)[1]).random(
                    (batch, NUM_UNIFORMS), np.float32)
                yield np.asarray(augment(x[index], u)), y[index].astype(np.int32)

    model.fit(batches(), epochs=epochs, steps_per_epoch=steps, verbose=1 if verbose else 0,
              shuffle=False)
    view = _compiled(lambda images: eval_transform(images, params))
    test_x, test_y = test
    out = [np.asarray(keras.ops.convert_to_numpy(model(view(test_x[i:i + 256]),
                                                       training=False)))
           for i in range(0, len(test_x), 256)]
    logits = np.concatenate(out)
    return model, {"top1": topk_accuracy(logits, test_y, 1),
                   "top5": topk_accuracy(logits, test_y, 5),
                   "learning_rate": learning_rate, "batch_size": batch}


def evaluate_protocol(run_dir, protocol, *, labels_fraction=1.0, seed=None, dataset=None,
                      data_dir=None, image_size=None, epochs=None, knn_k=None,
                      knn_temperature=None, learning_rate=None, batch_size=None,
                      verbose=0, write=True):
    """Evaluates the finished run at ``run_dir`` by ``protocol`` and records the entry.

    Args:
        protocol: ``linear``, ``knn`` or ``finetune`` (module docstring).
        labels_fraction: the fraction F of the labelled training split used
            (:func:`labelled_subset`, seeded by ``seed``).
        seed: subset, probe and fine-tuning seed (default: the run's ``seed``).
        dataset, data_dir: another dataset than the run's (a tfds name or ``folder``).
        image_size: the input size (default: the run's; see
            :func:`experiments.pretrained.encoder_at_size`).
        epochs: linear (default: the run's ``epochs_finetuning``) and finetune (default:
            :func:`finetune_epochs`). knn_k, knn_temperature: knn (200, 0.1).
            learning_rate, batch_size: finetune (0.05 x batch / 256, 256).

    An option the protocol does not use is refused. Every check runs before anything is
    written; ``write=False`` writes nothing. Returns the entry (see :func:`entry_key`).
    """
    options = dict(epochs=epochs, knn_k=knn_k, knn_temperature=knn_temperature,
                   learning_rate=learning_rate, batch_size=batch_size)
    check_options(protocol, **options)
    labelled_subset([0], labels_fraction, 0)  # the range check, before any reading
    info, config = read_run(run_dir)
    if info["status"] != "complete":
        raise ValueError(f"{run_dir!r} is not finished (run status: {info['status']}); "
                         f"finish it with train.py --resume. Received: {run_dir!r}")
    seed = int(config.seed if seed is None else seed)
    eval_config = evaluation_config(config, dataset, data_dir, image_size)
    backend = check_backend(eval_config)
    encoder = _saved_encoder(run_dir, config)
    encoder = encoder_at_size(encoder, config, eval_config.image_size, run_dir)
    data = backend.load_dataset(eval_config)
    entry = {
        "protocol": protocol, "dataset": _dataset_label(eval_config.dataset,
                                                        eval_config.data_dir),
        "labels_fraction": float(labels_fraction), "seed": seed,
        "image_size": eval_config.image_size, "eval_split": data.eval_split,
        "num_classes": data.num_classes, "num_test": data.num_test,
    }
    if eval_config.dataset == "folder":
        entry["data_dir"] = os.path.abspath(eval_config.data_dir)
    if protocol == "finetune":
        train_x, train_y = _arrays(data.train)
        subset = labelled_subset(train_y, labels_fraction, seed, data.class_names)
        epochs = int(epochs or finetune_epochs(labels_fraction))
        _, result = finetune(encoder, eval_config, (train_x[subset], train_y[subset]),
                             _arrays(data.test), data.num_classes, epochs=epochs,
                             learning_rate=learning_rate,
                             batch_size=batch_size or FINETUNE_BATCH_SIZE, seed=seed,
                             verbose=verbose)
        entry.update(epochs=epochs, params={k: result[k] for k in ("learning_rate",
                                                                   "batch_size")})
    else:
        train_f, train_y = extract_features(
            encoder, backend.evaluation_dataset(data.train, eval_config))
        test_f, test_y = extract_features(
            encoder, backend.evaluation_dataset(data.test, eval_config))
        subset = labelled_subset(train_y, labels_fraction, seed, data.class_names)
        if protocol == "knn":
            k = int(knn_k or KNN_K)
            temperature = float(knn_temperature or KNN_TEMPERATURE)
            scores = knn_scores(train_f[subset], train_y[subset], test_f, data.num_classes,
                                k=k, temperature=temperature)
            result = {"top1": topk_accuracy(scores, test_y, 1),
                      "top5": topk_accuracy(scores, test_y, 5)}
            entry.update(epochs=None, params={"k": k, "temperature": temperature})
        else:
            epochs = int(epochs or config.epochs_finetuning)
            _, result = fit_linear_probe(
                encoder, (train_f[subset], train_y[subset]), (test_f, test_y),
                data.num_classes, epochs=epochs, learning_rate=config.probe_learning_rate,
                weight_decay=config.probe_weight_decay, batch_size=config.probe_batch_size,
                seed=seed, verbose=verbose, protocol=config.probe_protocol)
            entry.update(epochs=epochs, params={
                "probe_protocol": result["protocol"], "weight_decay": config.probe_weight_decay,
                **({} if result["protocol"] == "full_batch" else {
                    "learning_rate": config.probe_learning_rate,
                    "batch_size": config.probe_batch_size})})
    entry.update(num_train=int(len(subset)), top1=float(result["top1"]),
                 top5=float(result["top5"]),
                 date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"))
    if write:
        record_evaluation(run_dir, entry)
    return entry


# ---------------------------------------------------------------------------
# evaluations.json: the entries of a run, one per key.
# ---------------------------------------------------------------------------

def entry_key(entry):
    """What makes two evaluations the same: everything but their results and date."""
    return json.dumps({k: v for k, v in entry.items()
                       if k not in ("top1", "top5", "date", "num_test", "num_train",
                                    "num_classes", "eval_split")}, sort_keys=True)


def read_evaluations(run_dir):
    """The entries of ``RUN_DIR/evaluations.json`` ([] when there is none)."""
    path = os.path.join(run_dir, EVALUATIONS_JSON)
    if not os.path.exists(path):
        return []
    try:
        with open(path) as f:
            saved = json.load(f)
        return list(saved["evaluations"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"Corrupt {path!r}: {error}") from None


def record_evaluation(run_dir, entry):
    """Adds ``entry`` to ``evaluations.json``, replacing the entry of the same key only."""
    key = entry_key(entry)
    entries = [e for e in read_evaluations(run_dir) if entry_key(e) != key] + [entry]
    safe_io.write_json(os.path.join(run_dir, EVALUATIONS_JSON),
                       {"format_version": EVALUATIONS_FORMAT_VERSION, "evaluations": entries})
    return entries


def recorded_entries(run_dir):
    """train.py's own numbers (``metrics.json``) as entries (``source: train.py``): the
    linear probe and the final kNN on the run's dataset, all labels."""
    path = RunDirectory.from_path(run_dir).metrics
    if not os.path.exists(path):
        return []
    with open(path) as f:
        metrics = json.load(f)
    _, config = read_run(run_dir)
    common = {"dataset": _dataset_label(config.dataset, config.data_dir),
              "labels_fraction": 1.0, "seed": config.seed, "source": "train.py"}
    rows = [{"protocol": "linear", "epochs": config.epochs_finetuning, **common,
             "top1": metrics["top1"], "top5": metrics["top5"]}]
    if metrics.get("knn_accuracy") is not None:
        rows.append({"protocol": "knn", "epochs": None, **common,
                     "top1": metrics["knn_accuracy"], "top5": None})
    return rows


def _describe(entry):
    params = entry.get("params") or {}
    return ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def evaluations_table(rows):
    """The rows as a fixed-width text table (one line per evaluation)."""
    head = ("source", "protocol", "dataset", "labels", "epochs", "seed", "top-1", "top-5",
            "date", "params")
    lines = [head]
    for row in rows:
        top5 = row.get("top5")
        lines.append((row.get("source", "test.py"), row["protocol"], row["dataset"],
                      f"{row['labels_fraction']:g}",
                      "-" if row.get("epochs") is None else str(row["epochs"]),
                      str(row["seed"]), f"{row['top1']:.4f}",
                      "-" if top5 is None else f"{top5:.4f}",
                      row.get("date", "-"), _describe(row)))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def row_label(row):
    """``protocol · dataset · F% of labels, E ep`` of one row, as the figure names it."""
    epochs = "" if row.get("epochs") is None else f", {row['epochs']} ep"
    source = " [train.py]" if row.get("source") == "train.py" else ""
    return (f"{row['protocol']} · {row['dataset']} · {100 * row['labels_fraction']:g}% of "
            f"labels{epochs}{source}")


def evaluations_figure(rows, title=None):
    """Horizontal bars of top-1 (and top-5 where recorded), one pair per row, labelled by
    :func:`row_label`. Returns the matplotlib Figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    figure = Figure(figsize=(8.0, 1.2 + 0.45 * len(rows)), layout="constrained")
    FigureCanvasAgg(figure)
    axis = figure.subplots()
    y = np.arange(len(rows))[::-1]
    top1 = np.array([row["top1"] for row in rows], float)
    top5 = np.array([np.nan if row.get("top5") is None else row["top5"] for row in rows])
    bars = axis.barh(y + 0.2, top1, 0.4, label="top-1", color="C0")
    axis.bar_label(bars, fmt="%.3f", fontsize=7)
    if np.isfinite(top5).any():
        has = np.isfinite(top5)
        bars = axis.barh(y[has] - 0.2, top5[has], 0.4, label="top-5", color="C1")
        axis.bar_label(bars, fmt="%.3f", fontsize=7)
    axis.set_yticks(y, [row_label(row) for row in rows], fontsize=8)
    axis.set_xlim(0, 1.08)
    axis.set_xlabel("accuracy on the evaluation split")
    axis.legend(fontsize=8, loc="lower right")
    axis.grid(True, axis="x", alpha=0.3)
    if title:
        axis.set_title(title, fontsize=9)
    return figure


def summarise(run_dir):
    """``(table text, figure path or None)`` of every evaluation of a run, train.py's
    first; draws ``evaluations.png`` when the run has evaluations of its own."""
    entries = read_evaluations(run_dir)
    rows = recorded_entries(run_dir) + entries
    if not rows:
        return "", None
    path = None
    if entries:
        from experiments.visualisation import save_figure
        name = os.path.basename(os.path.normpath(run_dir))
        path = save_figure(evaluations_figure(rows, title=f"{name}: evaluations"),
                           os.path.join(run_dir, EVALUATIONS_PNG))
    return evaluations_table(rows), path
