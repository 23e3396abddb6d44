"""Keras callbacks used during pre-training: monitors, eigenspace tracker, NaN guard.

Each callback takes plain arguments (no global flags) so a notebook can use it.
"""

import json
import math
import os
import re

import keras
import numpy as np

from experiments import eigenspace
from experiments.metrics import knn_accuracy
from models.classifier import extract_features

#: z_std below this fraction of the healthy 1/sqrt(d) is reported as collapse.
COLLAPSE_FRACTION = 0.1


class NonFiniteLossError(RuntimeError):
    """Raised when the pre-training loss becomes NaN or Inf."""


def current_learning_rate(optimizer):
    """The base learning rate as a float: the default optimizer's for a MultiOptimizer,
    the inner one's for a LossScaleOptimizer. With a ``LearningRateSchedule`` it is
    the schedule's value at the optimizer's current iteration (the rate of its next
    step), not the schedule object."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    if isinstance(inner, keras.optimizers.MultiOptimizer):
        # The OptimizerMap's default optimizer holds the base (non-predictor) rate.
        default = getattr(inner._optimizer_map, "default_optimizer", None)
        inner = default if default is not None else inner.optimizers[-1]
    rate = inner.learning_rate  # Keras evaluates a schedule at ``inner.iterations``
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rate = rate(inner.iterations)
    return float(keras.ops.convert_to_numpy(rate))


class NonFiniteStateError(NonFiniteLossError):
    """Raised when a model or optimizer array is NaN/Inf at the end of an epoch."""


def checkpoint_note(checkpoint):
    """What a stopped run keeps: ``"the checkpoint of epoch N (PATH) is kept"`` or
    that there is none."""
    if checkpoint is None:
        return "no checkpoint is kept"
    if checkpoint.saved_epoch:
        return (f"the checkpoint of epoch {checkpoint.saved_epoch} "
                f"({checkpoint.directory}) is kept")
    return "no checkpoint is kept (none was written before)"


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteLossError` at the first NaN/Inf loss.

    The message says which checkpoint is kept: that of ``checkpoint`` (a
    :class:`RunCheckpoint`, which never writes non-finite state), or none.
    """

    def __init__(self, checkpoint=None):
        super().__init__()
        self._epoch = 0
        self.checkpoint = checkpoint

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"Non-finite loss ({float(loss)}) at epoch {self._epoch + 1}, step "
                f"{batch + 1}; {checkpoint_note(self.checkpoint)}.")


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 accuracy (k, cosine, temperature; InstDisc/solo-learn) of the
    online encoder's features, every ``every`` epochs and at the last epoch.

    Writes ``knn_accuracy`` into the logs of the epochs it is computed on (no
    placeholder on the others).
    """

    def __init__(self, train_data, test_data, num_classes, every, k=200, temperature=0.1,
                 total_epochs=None):
        super().__init__()
        self.train_data, self.test_data = train_data, test_data
        self.num_classes, self.every = num_classes, every
        self.k, self.temperature = k, temperature
        self.total_epochs = total_epochs

    def due(self, epoch):
        last = self.total_epochs is not None and epoch + 1 == self.total_epochs
        return self.every > 0 and ((epoch + 1) % self.every == 0 or last)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.due(epoch):
            encoder = self.model.online_encoder
            train_x, train_y = extract_features(encoder, self.train_data)
            test_x, test_y = extract_features(encoder, self.test_data)
            logs["knn_accuracy"] = knn_accuracy(train_x, train_y, test_x, test_y,
                                                self.num_classes, k=self.k,
                                                temperature=self.temperature)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds ``learning_rate`` (the rate of the next step) to the epoch logs."""

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)


def _stream_is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class EpochSummary(keras.callbacks.Callback):
    """Prints one plain line per epoch to ``stream`` (stdout; adding ``learning_rate``
    when no :class:`LearningRateLogger` did) and a warning line on collapse. In a run it
    comes after :class:`RunCheckpoint`: an epoch's line is printed once its checkpoint
    is on disk.

    ``verbose``: 0 prints nothing; 1 prints the epoch lines, and on a terminal also a
    progress line (``epoch E/N step S/T``) that each epoch line replaces, so that no
    line is printed into it. Run ``model.fit`` with ``verbose=0`` beside it (Keras's
    own progress bar would print every epoch a second time).
    """

    def __init__(self, total_epochs, projection_dim, verbose=1, steps_per_epoch=None,
                 stream=None):
        super().__init__()
        self.total_epochs = total_epochs
        self.threshold = COLLAPSE_FRACTION / math.sqrt(projection_dim)
        self.verbose = verbose
        self.steps_per_epoch = steps_per_epoch
        self.stream = stream
        self._epoch = 0

    def _out(self):
        import sys
        return self.stream if self.stream is not None else sys.stdout

    def _bar(self):
        return self.verbose >= 1 and _stream_is_terminal(self._out())

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if self._bar():
            total = f"/{self.steps_per_epoch}" if self.steps_per_epoch else ""
            self._out().write(f"\repoch {self._epoch + 1}/{self.total_epochs} "
                              f"step {batch + 1}{total}")
            self._out().flush()

    def line(self, epoch, logs):
        """The epoch's line: ``epoch E/N: loss L z_std Z [knn K] lr R``."""
        knn = logs.get("knn_accuracy")
        knn_text = "" if knn is None or not math.isfinite(knn) else f" knn {knn:.4f}"
        return (f"epoch {epoch + 1}/{self.total_epochs}: loss {logs.get('loss', math.nan):.4f} "
                f"z_std {logs.get('z_std', math.nan):.4f}{knn_text} "
                f"lr {logs['learning_rate']:.4g}")

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        if "learning_rate" not in logs:
            logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        if self.verbose < 1:
            return
        out = self._out()
        clear = "\r\033[K" if self._bar() else ""
        print(clear + self.line(epoch, logs), file=out, flush=True)
        if logs.get("z_std", 1.0) < self.threshold:
            print(f"warning: epoch {epoch + 1}: representation collapse: z_std "
                  f"{logs['z_std']:.4g} is below {self.threshold:.4g} (healthy is about "
                  f"{self.threshold / COLLAPSE_FRACTION:.4g})", file=out, flush=True)


def predictor_matrix(model, z):
    """``Wp`` (acting on column vectors) of a SiameseNetwork.

    Linear predictors: the transposed Dense kernel. A 2-layer predictor has no
    single matrix: the least-squares linear map from ``z`` to ``q(z)`` on the
    probe batch is used (the product of its two kernels, as in the original TF2
    reproduction, ignores BN and ReLU and is not the map the network computes).
    """
    kernel = model.predictor_kernel
    if kernel is not None:
        return np.asarray(keras.ops.convert_to_numpy(kernel), np.float64).T
    p = model.predictor(z, training=False)
    return eigenspace.least_squares_predictor(np.asarray(keras.ops.convert_to_numpy(z), np.float64),
                                              np.asarray(keras.ops.convert_to_numpy(keras.ops.cast(p, "float32")), np.float64))


def eigenspace_snapshot(model, probe_images, epoch):
    """One :class:`experiments.eigenspace.EigenspaceRecord` of ``model``.

    ``F`` is the model's running accumulator (the one DirectPred uses); before
    the first step, when it is still empty, ``E[z z^T]`` over the probe batch.
    """
    z = keras.ops.cast(model.online_projector(
        model.online_encoder(probe_images, training=False), training=False), "float32")
    if int(model.step_counter.numpy()) > 0:
        corr = model.correlation.numpy()
    else:
        zn = keras.ops.convert_to_numpy(z).astype(np.float64)
        corr = zn.T @ zn / len(zn)
    record = eigenspace.eigen_metrics(corr, predictor_matrix(model, z))
    record["epoch"] = int(epoch)
    return record


class EigenspaceTracker(keras.callbacks.Callback):
    """Records the spectra of F and Wp and their alignment (paper Sec. 3.1, Fig. 2) at epoch 0,
    every ``every`` epochs and at the last one (``total_epochs``, when given), saving
    ``eigenspace.npz`` / ``.json`` after each."""

    def __init__(self, probe_images, directory, every=5, records=None, total_epochs=None):
        super().__init__()
        self.probe_images = probe_images
        self.directory = directory
        self.every = every
        self.records = list(records or [])
        self.total_epochs = total_epochs

    def _record(self, epoch):
        if any(r["epoch"] == epoch for r in self.records):
            return
        self.records.append(eigenspace_snapshot(self.model, self.probe_images, epoch))
        eigenspace.save_eigenspace(self.records, self.directory)

    def on_train_begin(self, logs=None):
        if int(self.model.step_counter.numpy()) == 0:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0 or epoch + 1 == self.total_epochs:
            self._record(epoch + 1)


def _stable_names(names):
    """``names`` with the optimizers' part made independent of the process: Keras numbers
    the optimizers a process makes (``sgd``, ``sgd_1``, ...), so the first part of an
    optimizer variable's path becomes the optimizer's place among those of this model
    (``optimizer/sgd_3/x`` -> ``optimizer/0.sgd/x``). A slot keeps the rest of its path,
    which Keras derives from its model variable's path."""
    places, out = {}, []
    for name in names:
        if not name.startswith("optimizer/"):
            out.append(name)
            continue
        owner, _, rest = name[len("optimizer/"):].rpartition("/")
        place = places.setdefault(owner, len(places))
        out.append(f"optimizer/{place}.{re.sub(r'_[0-9]+$', '', owner)}/{rest}")
    return out


def training_state(model):
    """``[(name, variable)]`` of every array that decides what the next step does:
    the model's weights (online and target networks, predictor, BatchNorm
    statistics, step counter, F, queues, prototypes) and the optimizer's variables
    (iterations, momentum / Adam slots, loss scale), named by path (unique; the
    optimizers' part by :func:`_stable_names`). The optimizer must be built."""
    owner = {}  # which sub-network (online_encoder, target_encoder, ...) holds a weight
    for layer in model.layers:
        for v in layer.weights:
            owner.setdefault(id(v), layer.name)
    seen, state = set(), []
    for prefix, variables in (("model", model.weights),
                              ("optimizer", model.optimizer.variables)):
        for v in variables:
            if id(v) in seen:
                continue
            seen.add(id(v))
            where = f"{owner[id(v)]}/" if id(v) in owner else ""
            state.append((f"{prefix}/{where}{getattr(v, 'path', v.name)}", v))
    names = _stable_names([name for name, _ in state])
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"Two training-state variables share the path {twice[0]!r}: a "
                         "checkpoint could not tell them apart. Give their layers distinct "
                         "names.")
    return list(zip(names, (v for _, v in state)))


def non_finite_arrays(named_arrays):
    """Names of the floating-point arrays holding a NaN or Inf."""
    return [name for name, a in named_arrays
            if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a))]


def _read_arrays(path, meta):
    """``{name: array}`` of the checkpoint npz ``path`` described by ``meta`` (its
    state.json): keyed by name (format 2), or by position with the names in ``meta``
    (format 1, their optimizer part made stable by :func:`_stable_names`)."""
    version = meta.get("format", 1)
    if version not in (1, RunCheckpoint.FORMAT):
        raise ValueError(f"The checkpoint {path!r} is in format {version}; this version of "
                         f"the package reads formats 1 and {RunCheckpoint.FORMAT}.")
    try:
        with np.load(path) as saved:
            arrays = {name: saved[name] for name in saved.files}
    except (OSError, ValueError, EOFError) as error:
        raise ValueError(f"Corrupt checkpoint {path!r}: {error}") from None
    if version == RunCheckpoint.FORMAT:
        return arrays
    names = meta.get("names")
    positions = [f"a{i:05d}" for i in range(len(arrays))]
    if not isinstance(names, list) or len(names) != len(arrays) or set(positions) != set(
            arrays):
        raise ValueError(f"The checkpoint {path!r} is in the positional format 1 without "
                         "the names of its arrays in state.json: it cannot be restored by "
                         "variable path.")
    return dict(zip(_stable_names(names), (arrays[key] for key in positions)))


class RunCheckpoint(keras.callbacks.Callback):
    """Checkpoint of the whole training state after every epoch, for an exact resume.

    ``directory/state.json`` (``format``, ``epoch``, the history rows so far) names
    ``directory/state-EPOCH.npz``: every array of :func:`training_state`, keyed by its
    name (variable path), and restored by it: an array missing, left over or of another
    shape is a one-line ``ValueError`` naming the variable. Checkpoints of format 1
    (arrays ``a00000``, ... in the order of the ``names`` in state.json) are read too.
    Each is written to a temporary file and renamed; the npz goes first, so
    ``state.json`` always names a complete npz, and the previous npz is deleted
    only after the new ``state.json`` is in place. A state with a NaN or Inf in any
    array is never written (:class:`NonFiniteStateError`; the previous checkpoint
    stays). Everything else a resumed epoch sees is a function of (seed, epoch,
    step): see ``data_processing.augmentations.pretraining_dataset``.

    ``on_saved(rows)`` (optional) is called after each checkpoint with the history
    rows (``{"epoch": 1-based, metric: float}``) of every epoch so far.
    """

    STATE_JSON = "state.json"
    #: 2: the npz keyed by variable path; 1 (no ``format`` in state.json): positional.
    FORMAT = 2

    def __init__(self, directory, on_saved=None):
        super().__init__()
        self.directory = directory
        self.on_saved = on_saved
        self.saved_epoch = 0
        self.rows = []

    def _meta_path(self):
        return os.path.join(self.directory, self.STATE_JSON)

    def read_meta(self):
        """The saved ``state.json`` as a dict, or None when there is no checkpoint."""
        path = self._meta_path()
        if not os.path.exists(path):
            return None
        try:
            with open(path) as f:
                meta = json.load(f)
            int(meta["epoch"])
            return meta
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f"Corrupt checkpoint {path!r}: {error}") from None

    def restore(self, model):
        """Loads the checkpoint into ``model`` (compiled, optimizer built); returns
        its epoch (0 when there is none)."""
        meta = self.read_meta()
        if meta is None:
            return 0
        path = os.path.join(self.directory, meta["arrays"])
        arrays = _read_arrays(path, meta)
        state = training_state(model)
        mismatch = f"The checkpoint {path!r} does not match this model:"
        for name, v in state:
            if name not in arrays:
                raise ValueError(f"{mismatch} it has no array for {name!r}.")
            if tuple(arrays[name].shape) != tuple(v.shape):
                raise ValueError(f"{mismatch} {name!r} has shape {tuple(arrays[name].shape)}"
                                 f", the model's {tuple(v.shape)}.")
        extra = sorted(set(arrays) - {name for name, _ in state})
        if extra:
            raise ValueError(f"{mismatch} it holds {extra[0]!r}, which the model lacks.")
        for name, v in state:
            v.assign(arrays[name])
        self.saved_epoch = int(meta["epoch"])
        self.rows = list(meta["rows"])
        return self.saved_epoch

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        named = [(name, np.asarray(keras.ops.convert_to_numpy(v)))
                 for name, v in training_state(self.model)]
        bad = non_finite_arrays(named)
        if bad:
            shown = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
            raise NonFiniteStateError(
                f"Non-finite values in {len(bad)} of the {len(named)} model and optimizer "
                f"arrays after epoch {epoch + 1} ({shown}); {checkpoint_note(self)}.")
        from experiments import safe_io
        epoch_done = epoch + 1
        name = f"state-{epoch_done}.npz"
        meta = {"format": self.FORMAT, "epoch": epoch_done, "arrays": name,
                "rows": self.rows + [row]}
        try:
            safe_io.atomic_write(os.path.join(self.directory, name),
                                 lambda f: np.savez(f, **dict(named)))
            safe_io.write_json(self._meta_path(), meta, sort_keys=False)  # row order kept
        except safe_io.WriteError as error:
            error.note = checkpoint_note(self)
            raise
        for old in os.listdir(self.directory):
            if old.startswith("state-") and old.endswith(".npz") and old != name:
                try:
                    os.remove(os.path.join(self.directory, old))
                except OSError:
                    pass
        self.rows.append(row)
        self.saved_epoch = epoch_done
        if self.on_saved is not None:
            self.on_saved(list(self.rows))
