"""Keras callbacks used during pre-training: monitors, eigenspace tracker, NaN guard.

Each callback takes plain arguments (no global flags) so a notebook can use it.
"""

import math

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


class InterruptCheck(keras.callbacks.Callback):
    """Raises ``KeyboardInterrupt`` at the next batch end once ``interrupted`` (a
    ``threading.Event`` set by the caller's SIGINT handler) is set: a Ctrl-C whose
    ``KeyboardInterrupt`` CPython swallowed (raised inside a finaliser, "Exception ignored
    in ...") still stops the run."""

    def __init__(self, interrupted):
        super().__init__()
        self.interrupted = interrupted

    def on_train_batch_end(self, batch, logs=None):
        if self.interrupted.is_set():
            raise KeyboardInterrupt

    on_epoch_end = on_train_batch_end
