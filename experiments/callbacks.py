"""Keras callbacks used during pre-training: monitors, eigenspace tracker, NaN guard.

Each callback takes plain arguments (no global flags) so a notebook can use it.
"""

import csv
import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

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


class NonFiniteLossGuard(keras.callbacks.Callback):
    """Stops training with :class:`NonFiniteLossError` at the first NaN/Inf loss.

    Raising (rather than setting ``stop_training``) skips ``on_train_end``, so
    ``BackupAndRestore`` keeps the checkpoint of the last completed epoch.
    """

    def __init__(self):
        super().__init__()
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"Non-finite loss ({float(loss)}) at epoch {self._epoch + 1}, step "
                f"{batch + 1}; the last completed epoch's checkpoint is kept.")


class KNNMonitor(keras.callbacks.Callback):
    """Weighted kNN top-1 accuracy (k, cosine, temperature; InstDisc/solo-learn) of the
    online encoder's features, every ``every`` epochs and at the last epoch.

    Writes ``knn_accuracy`` into the epoch logs (NaN on epochs it is not computed).
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
        if logs is None:
            return
        logs["knn_accuracy"] = float("nan")
        if self.due(epoch):
            encoder = self.model.online_encoder
            train_x, train_y = extract_features(encoder, self.train_data)
            test_x, test_y = extract_features(encoder, self.test_data)
            logs["knn_accuracy"] = knn_accuracy(train_x, train_y, test_x, test_y,
                                                self.num_classes, k=self.k,
                                                temperature=self.temperature)


class EpochSummary(keras.callbacks.Callback):
    """Adds ``learning_rate`` to the logs and logs one line per epoch; warns on collapse."""

    def __init__(self, total_epochs, projection_dim):
        super().__init__()
        self.total_epochs = total_epochs
        self.threshold = COLLAPSE_FRACTION / math.sqrt(projection_dim)

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["learning_rate"] = current_learning_rate(self.model.optimizer)
        knn = logs.get("knn_accuracy", float("nan"))
        knn_text = "" if not math.isfinite(knn) else f" knn {knn:.4f}"
        logging.info("epoch %d/%d: loss %.4f z_std %.4f%s lr %.4g", epoch + 1,
                     self.total_epochs, logs.get("loss", float("nan")),
                     logs.get("z_std", float("nan")), knn_text, logs["learning_rate"])
        if logs.get("z_std", 1.0) < self.threshold:
            logging.warning("epoch %d: representation collapse: z_std %.4g is below %.4g "
                            "(healthy is about %.4g)", epoch + 1, logs["z_std"],
                            self.threshold, self.threshold / COLLAPSE_FRACTION)


def predictor_matrix(model, z):
    """``Wp`` (acting on column vectors) of a SiameseNetwork.

    Linear predictors: the transposed Dense kernel. A 2-layer predictor has no
    single matrix: the least-squares linear map from ``z`` to ``q(z)`` on the
    probe batch is used (the product of its two kernels, as in the original TF2
    reproduction, ignores BN and ReLU and is not the map the network computes).
    """
    kernel = model.predictor_kernel
    if kernel is not None:
        return np.asarray(kernel.numpy(), np.float64).T
    p = model.predictor(z, training=False)
    return eigenspace.least_squares_predictor(np.asarray(z, np.float64),
                                              np.asarray(tf.cast(p, tf.float32), np.float64))


def eigenspace_snapshot(model, probe_images, epoch):
    """One :class:`experiments.eigenspace.EigenspaceRecord` of ``model``.

    ``F`` is the model's running accumulator (the one DirectPred uses); before
    the first step, when it is still empty, ``E[z z^T]`` over the probe batch.
    """
    z = tf.cast(model.online_projector(model.online_encoder(probe_images, training=False),
                                       training=False), tf.float32)
    if int(model.step_counter.numpy()) > 0:
        corr = model.correlation.numpy()
    else:
        zn = z.numpy().astype(np.float64)
        corr = zn.T @ zn / len(zn)
    record = eigenspace.eigen_metrics(corr, predictor_matrix(model, z))
    record["epoch"] = int(epoch)
    return record


class EigenspaceTracker(keras.callbacks.Callback):
    """Records the spectra of F and Wp and their alignment (paper Sec. 4) at epoch 0
    and every ``every`` epochs, saving ``eigenspace.npz`` / ``.json`` after each."""

    def __init__(self, probe_images, directory, every=5, records=None):
        super().__init__()
        self.probe_images = probe_images
        self.directory = directory
        self.every = every
        self.records = list(records or [])

    def _record(self, epoch):
        if any(r["epoch"] == epoch for r in self.records):
            return
        self.records.append(eigenspace_snapshot(self.model, self.probe_images, epoch))
        eigenspace.save_eigenspace(self.records, self.directory)

    def on_train_begin(self, logs=None):
        if int(self.model.step_counter.numpy()) == 0:
            self._record(0)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every == 0:
            self._record(epoch + 1)


class HistoryLogger(keras.callbacks.Callback):
    """Appends one CSV row of epoch logs per epoch (``epoch`` is 1-based).

    Unlike ``keras.callbacks.CSVLogger`` it writes only the metrics present and
    appends across ``--resume`` (rows of a re-run epoch are de-duplicated when
    the history is merged).
    """

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        row = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()}}
        columns = None
        if os.path.exists(self.path) and os.path.getsize(self.path) > 0:
            with open(self.path, newline="") as f:
                columns = next(csv.reader(f))
        with open(self.path, "a", newline="") as f:
            if columns is None:
                columns = list(row)
                csv.writer(f).writerow(columns)
            csv.DictWriter(f, columns, extrasaction="ignore").writerow(row)
