"""experiments.training / callbacks: resume, NaN guard, effective Wp."""

import csv
import os

import keras
import numpy as np
import pytest

from config import get_config
from experiments import callbacks as cb
from experiments.eigenspace import load_eigenspace
from experiments.training import evaluate, train
from models import SiameseNetwork

TINY = dict(dataset="synthetic", max_train_examples=48, max_test_examples=24, batch_size=16,
            width=0.0625, image_size=16, epochs_pretraining=3, epochs_finetuning=1,
            knn_every=0, eigenspace=True, eigenspace_every=1)


class Interrupt(keras.callbacks.Callback):
    """Simulates a killed process after ``epochs`` completed epochs."""

    def __init__(self, epochs):
        super().__init__()
        self.epochs = epochs

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epochs:
            raise KeyboardInterrupt


def files(root):
    return sorted(os.path.relpath(os.path.join(d, f), root)
                  for d, _, fs in os.walk(root) for f in fs if "tfevents" not in f)


def test_resume_after_interruption_gives_the_same_layout(tmp_path):
    config = get_config("direct_pred").replace(**TINY)
    train(config, "full", results_dir=str(tmp_path), verbose=0)
    with pytest.raises(KeyboardInterrupt):
        train(config, "cut", results_dir=str(tmp_path), verbose=0, callbacks=[Interrupt(2)])
    assert os.path.isdir(tmp_path / "cut" / "checkpoint")
    assert not (tmp_path / "cut" / "metrics.json").exists()
    with pytest.raises(ValueError, match=r"fields differ: epochs_pretraining \(saved 3, now 4\)$"):
        train(config.replace(epochs_pretraining=4), "cut", results_dir=str(tmp_path),
              resume=True, verbose=0)
    train(config, "cut", results_dir=str(tmp_path), resume=True, verbose=0)
    assert files(tmp_path / "cut") == files(tmp_path / "full")
    with open(tmp_path / "cut" / "history.csv") as f:
        epochs = [(r["phase"], int(r["epoch"])) for r in csv.DictReader(f)]
    assert epochs == [("pretrain", 1), ("pretrain", 2), ("pretrain", 3), ("probe", 1)]
    records = load_eigenspace(str(tmp_path / "cut" / "eigenspace_results"))
    assert [r["epoch"] for r in records] == [0, 1, 2, 3]
    resumed = SiameseNetwork(config)
    resumed.load_weights(str(tmp_path / "cut" / "siamese.weights.h5"))
    assert int(resumed.step_counter.numpy()) == 3 * (48 // 16)


def test_resume_needs_an_existing_run(tmp_path):
    config = get_config("byol").replace(**TINY)
    with pytest.raises(ValueError, match="No results folder"):
        train(config, "absent", results_dir=str(tmp_path), resume=True)


def test_validation_run_reports_the_held_out_split(tmp_path):
    config = get_config("byol").replace(**{**TINY, "max_test_examples": None,
                                          "validation_examples": 16, "epochs_pretraining": 1,
                                          "knn_every": 1})
    metrics = train(config, "val", results_dir=str(tmp_path), verbose=0)
    assert metrics["eval_split"] == "validation" and metrics["num_test"] == 16
    assert 0.0 <= metrics["knn_accuracy"] <= 1.0
    again = evaluate(str(tmp_path / "val"))  # test.py re-evaluates on the same split
    assert again["eval_split"] == "validation" and again["top1"] == metrics["top1"]


def test_non_finite_loss_guard():
    guard = cb.NonFiniteLossGuard()
    guard.on_epoch_begin(4)
    guard.on_train_batch_end(0, {"loss": 1.0})
    with pytest.raises(cb.NonFiniteLossError, match="epoch 5, step 3"):
        guard.on_train_batch_end(2, {"loss": float("nan")})
    with pytest.raises(cb.NonFiniteLossError):
        guard.on_train_batch_end(0, {"loss": float("inf")})


def test_effective_predictor_matrix():
    linear = SiameseNetwork(get_config("byol_baseline").replace(
        width=0.0625, image_size=8, projection_dim=8))
    z = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
    np.testing.assert_array_equal(cb.predictor_matrix(linear, z),
                                  linear.predictor_kernel.numpy().T)
    mlp = SiameseNetwork(get_config("byol").replace(
        width=0.0625, image_size=8, projection_dim=8, predictor_hidden_dim=16))
    p = np.asarray(mlp.predictor(z, training=False), np.float64)
    expected = np.linalg.lstsq(z.astype(np.float64), p, rcond=None)[0].T
    np.testing.assert_allclose(cb.predictor_matrix(mlp, z), expected, atol=1e-6)


def test_learning_rate_of_plain_and_multi_optimizers():
    from models import build_optimizer
    assert cb.current_learning_rate(build_optimizer(get_config("byol"))) == pytest.approx(0.03)
    multi = build_optimizer(get_config("simsiam_symmetric_predictor"))
    assert cb.current_learning_rate(multi) == pytest.approx(0.03)


@pytest.mark.parametrize("name", ["byol", "simsiam_symmetric_predictor"])
def test_learning_rate_of_a_schedule_is_its_value_at_the_current_step(name):
    """warmup 0.01 -> 0.1 over 4 steps, cosine to 0 at step 8; EpochSummary logs floats."""
    from models import optimizers
    config = get_config(name).replace(optimizer="lars", lr_schedule="warmup_cosine",
                                      learning_rate=0.1, warmup_lr=0.01, warmup_epochs=1,
                                      epochs_pretraining=2)
    optimizer = optimizers.build_optimizer(config, steps_per_epoch=4)
    inner = (optimizer.optimizers if isinstance(optimizer, keras.optimizers.MultiOptimizer)
             else [optimizer])
    for step, expected in ((0, 0.01), (2, 0.055), (4, 0.1), (6, 0.05), (8, 0.0)):
        for o in inner:
            o.iterations.assign(step)
        rate = cb.current_learning_rate(optimizer)
        assert isinstance(rate, float) and rate == pytest.approx(expected, abs=1e-6)
        wrapped = keras.optimizers.LossScaleOptimizer(optimizer)
        assert cb.current_learning_rate(wrapped) == pytest.approx(expected, abs=1e-6)


def test_periodic_monitors_record_the_last_epoch_and_no_placeholder(tmp_path):
    recorded = []
    tracker = cb.EigenspaceTracker(None, str(tmp_path), every=2, total_epochs=5)
    tracker._record = recorded.append
    knn = cb.KNNMonitor(None, None, 10, every=2, total_epochs=5)
    for epoch in range(5):
        tracker.on_epoch_end(epoch)
    assert recorded == [2, 4, 5]
    assert [e + 1 for e in range(5) if knn.due(e)] == [2, 4, 5]
    logs = {"loss": 1.0}
    knn.on_epoch_end(0, logs)  # not due: nothing added (no NaN placeholder)
    assert logs == {"loss": 1.0}


def test_resume_may_change_the_probe_and_eigenspace_has_the_last_epoch(tmp_path):
    """A run whose pre-training is done resumes with other probe options (they do not
    change what pre-trained); eigenspace_every=2 of 3 epochs records epochs 0, 2, 3."""
    config = get_config("direct_pred").replace(**{**TINY, "eigenspace_every": 2})
    with pytest.raises(KeyboardInterrupt):
        train(config, "cut", results_dir=str(tmp_path), verbose=0, callbacks=[Interrupt(2)])
    changed = config.replace(epochs_finetuning=2, probe_protocol="official")
    metrics = train(changed, "cut", results_dir=str(tmp_path), resume=True, verbose=0)
    assert metrics["probe_protocol"] == "official"
    saved = open(tmp_path / "cut" / "config.json").read()
    assert get_config("direct_pred").from_json(saved) == changed
    with open(tmp_path / "cut" / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["phase"] for r in rows].count("probe") == 2
    records = load_eigenspace(str(tmp_path / "cut" / "eigenspace_results"))
    assert [r["epoch"] for r in records] == [0, 2, 3]
    with pytest.raises(ValueError, match="epochs_finetuning"):  # complete: nothing changes
        train(config, "cut", results_dir=str(tmp_path), resume=True, verbose=0)


class _Terminal:
    def __init__(self, tty):
        self.text, self.tty = "", tty

    def write(self, text):
        self.text += text

    def flush(self):
        pass

    def isatty(self):
        return self.tty


@pytest.mark.parametrize("tty", [True, False])
def test_epoch_summary_one_line_per_epoch_and_a_progress_line_only_on_a_terminal(tty):
    out = _Terminal(tty)
    summary = cb.EpochSummary(2, 64, verbose=1, steps_per_epoch=3, stream=out)
    for epoch in range(2):
        summary.on_epoch_begin(epoch)
        for step in range(3):
            summary.on_train_batch_end(step)
        logs = {"loss": 1.0, "z_std": 0.001, "learning_rate": 0.03}
        if epoch == 1:
            logs["knn_accuracy"] = 0.25
        summary.on_epoch_end(epoch, logs)
    lines = out.text.split("\n")
    if tty:  # the progress line, then the epoch line replacing it (erased first)
        assert lines[0].startswith("\repoch 1/2 step 1/3\repoch 1/2 step 2/3")
        assert lines[0].endswith("\r\x1b[Kepoch 1/2: loss 1.0000 z_std 0.0010 lr 0.03")
    else:
        assert lines == ["epoch 1/2: loss 1.0000 z_std 0.0010 lr 0.03",
                         "warning: epoch 1: representation collapse: z_std 0.001 is below "
                         "0.0125 (healthy is about 0.125)",
                         "epoch 2/2: loss 1.0000 z_std 0.0010 knn 0.2500 lr 0.03",
                         "warning: epoch 2: representation collapse: z_std 0.001 is below "
                         "0.0125 (healthy is about 0.125)", ""]
    quiet = _Terminal(tty)
    summary = cb.EpochSummary(2, 64, verbose=0, stream=quiet)
    summary.on_train_batch_end(0)
    summary.on_epoch_end(0, {"loss": 1.0, "z_std": 0.1, "learning_rate": 0.03})
    assert quiet.text == ""
