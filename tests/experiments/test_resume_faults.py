"""Runs that survive (issue 24): kill -9 and --resume equal an uninterrupted run,
only finite checkpoints, disk faults as one line, --resume on a complete run.

train.py runs in subprocesses on tiny synthetic data (SmallAlexNet at width
1/16, 16 px, 2 steps per epoch) so that the kills are real SIGKILLs.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time

import h5py
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--dataset", "synthetic", "--max_train_examples", "32", "--max_test_examples", "16",
        "--batch_size", "16", "--backbone", "alexnet", "--width", "0.0625",
        "--image_size", "16", "--epochs_pretraining", "3", "--epochs_finetuning", "2",
        "--knn_every", "1", "--verbose", "1"]  # 1: the epoch lines (stdout)
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


class Run:
    """``train.py`` in a subprocess; its stderr lines are collected by a thread."""

    def __init__(self, results, name, *args):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "train.py"), "--name", name,
             "--results_dir", str(results), *TINY, *args],
            cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.stdout = []
        self._threads = [threading.Thread(target=self._read, args=(s, out), daemon=True)
                         for s, out in ((self.proc.stderr, self.lines),
                                        (self.proc.stdout, self.stdout))]
        for t in self._threads:
            t.start()

    def _read(self, stream, out):
        for line in stream:
            out.append(line)

    def kill_when(self, condition, timeout=300):
        """SIGKILL as soon as ``condition()`` holds; returns False if the run ended first."""
        end = time.time() + timeout
        while time.time() < end:
            if condition():
                os.kill(self.proc.pid, signal.SIGKILL)
                self.wait()
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.002)
        raise AssertionError("timed out waiting for the kill point")

    def wait(self, timeout=300):
        self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        return self.proc.returncode

    @property
    def stderr(self):
        return "".join(self.lines)


def logged(run, text):
    """The run printed ``text`` (its epoch lines are on stdout)."""
    return lambda: any(text in line for line in list(run.stdout))


def checkpoint_epoch(folder):
    try:
        with open(os.path.join(folder, "checkpoint", "state.json")) as f:
            return json.load(f)["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def h5_arrays(path):
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()])
                     if isinstance(obj, h5py.Dataset) else None)
    return out


def history(folder):
    with open(os.path.join(folder, "history.csv"), newline="") as f:
        return list(csv.DictReader(f))


def assert_same_run(clean, resumed):
    """history.csv row for row and every saved weight array (online, target,
    predictor, BN statistics, step counter, F, queue) to float rounding."""
    a, b = history(clean), history(resumed)
    assert [(r["phase"], r["epoch"]) for r in a] == [(r["phase"], r["epoch"]) for r in b]
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for key in ra:
            if key == "phase" or ra[key] == rb[key]:
                continue
            np.testing.assert_allclose(float(rb[key]), float(ra[key]), rtol=1e-6, atol=1e-7,
                                       err_msg=f"{key} epoch {ra['epoch']} ({ra['phase']})")
    wa = h5_arrays(os.path.join(clean, "siamese.weights.h5"))
    wb = h5_arrays(os.path.join(resumed, "siamese.weights.h5"))
    assert wa.keys() == wb.keys() and len(wa) > 10
    for key in wa:
        np.testing.assert_allclose(wb[key], wa[key], rtol=1e-5, atol=1e-6, err_msg=key)
    ma = json.load(open(os.path.join(clean, "metrics.json")))
    mb = json.load(open(os.path.join(resumed, "metrics.json")))
    assert ma["top1"] == pytest.approx(mb["top1"]) and ma["top5"] == pytest.approx(mb["top5"])


@pytest.mark.parametrize("model, extra, kills", [
    # at an epoch's log line (its checkpoint must be on disk), then mid-run
    ("byol", [], ["line 1", "checkpoint 2"]),
    ("directpred", ["--eigenspace", "--eigenspace_every", "1"], ["checkpoint 1"]),
    ("moco", [], ["line 2"]),
])
def test_kill_and_resume_equals_the_uninterrupted_run(tmp_path, model, extra, kills):
    args = ["--model", model, *extra]
    clean = Run(tmp_path, "clean", *args)
    assert clean.wait() == 0, clean.stderr[-3000:]
    folder = str(tmp_path / "cut")
    resume = []
    for kill in kills:
        run = Run(tmp_path, "cut", *args, *resume)
        kind, epoch = kill.split()
        epoch = int(epoch)
        if kind == "line":
            condition = logged(run, f"epoch {epoch}/3:")
        else:
            condition = lambda: checkpoint_epoch(folder) >= epoch  # noqa: E731
        assert run.kill_when(condition), run.stderr[-3000:]
        # the epoch is on disk before its log line; at most the epoch in progress is lost
        assert checkpoint_epoch(folder) >= epoch
        resume = ["--resume"]
    done = Run(tmp_path, "cut", *args, "--resume")
    assert done.wait() == 0, done.stderr[-3000:]
    assert "resuming after epoch" in "".join(done.stdout)
    assert_same_run(str(tmp_path / "clean"), folder)
    if "--eigenspace" in extra:
        from experiments.eigenspace import load_eigenspace
        ra = load_eigenspace(str(tmp_path / "clean" / "eigenspace_results"))
        rb = load_eigenspace(os.path.join(folder, "eigenspace_results"))
        assert [r["epoch"] for r in rb] == [r["epoch"] for r in ra] == [0, 1, 2, 3]
        for x, y in zip(ra, rb):
            np.testing.assert_allclose(y["f_eigenvalues"], x["f_eigenvalues"], rtol=1e-5,
                                       atol=1e-7)
    # --resume on the complete run says so and changes nothing (train.py once; the
    # same check in-process for the others)
    before = {p: os.path.getmtime(os.path.join(folder, p)) for p in os.listdir(folder)}
    if model == "byol":
        again = Run(tmp_path, "cut", *args, "--resume")
        assert again.wait() == 0, again.stderr[-3000:]
        assert "is already complete; --resume changed nothing." in "".join(again.stdout)
    else:
        from config import Config
        from experiments.training import train
        with open(os.path.join(folder, "config.json")) as f:
            config = Config.from_json(f.read())
        metrics = train(config, "cut", results_dir=str(tmp_path), resume=True, verbose=0)
        assert metrics["already_complete"]
    assert {p: os.path.getmtime(os.path.join(folder, p)) for p in os.listdir(folder)} == before


# ---------------------------------------------------------------------------
# Only finite checkpoints.
# ---------------------------------------------------------------------------

def tiny_model(name="byol"):
    from config import get_config
    from models import build_model, build_optimizer
    config = get_config(name).replace(backbone="alexnet", width=0.0625, image_size=16)
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=2))
    model.optimizer.build([v for v, _ in model.trainable_with_decay()])
    return model


def test_checkpoint_round_trip_and_non_finite_state_is_never_saved(tmp_path):
    from experiments import callbacks as cb
    from experiments import checkpoint as ckpt
    model = tiny_model()
    directory = str(tmp_path / "checkpoint")
    saver = ckpt.RunCheckpoint(directory)
    saver.set_model(model)
    state = ckpt.training_state(model)
    names = [n for n, _ in state]
    # the target network, BN statistics, step counter and optimizer slots are all in it
    assert any("target_encoder" in n and "moving_variance" in n for n in names)
    assert any(n.endswith("step_counter") for n in names)
    assert any(n.startswith("optimizer/") and "momentum" in n for n in names)
    rng = np.random.default_rng(0)
    for _, v in state:
        if "float" in str(v.dtype):
            v.assign(rng.normal(size=v.shape).astype(str(v.dtype)))
    model.step_counter.assign(7)
    saved = [np.array(v.numpy()) for _, v in state]
    saver.on_epoch_end(0, {"loss": 1.5})
    assert sorted(os.listdir(directory)) == ["state-1.npz", "state.json"]
    # a BN moving variance goes Inf (as with --base_lr 1e6): nothing is replaced
    variance = [v for n, v in state if "moving_variance" in n]
    variance[0].assign(np.full(variance[0].shape, np.inf, "float32"))
    with pytest.raises(cb.NonFiniteStateError,
                       match=r"Non-finite values in 1 of .* after epoch 2 .*moving_variance.*; "
                             r"the checkpoint of epoch 1 \(.*checkpoint\) is kept\.$"):
        saver.on_epoch_end(1, {"loss": 1.0})
    assert sorted(os.listdir(directory)) == ["state-1.npz", "state.json"]
    fresh = tiny_model()
    loader = ckpt.RunCheckpoint(directory)
    assert loader.restore(fresh) == 1 and loader.rows == [{"epoch": 1, "loss": 1.5}]
    for (name, v), a in zip(ckpt.training_state(fresh), saved):
        np.testing.assert_array_equal(v.numpy(), a, err_msg=name)
    # the loss guard says truthfully what is kept
    guard = cb.NonFiniteLossGuard(ckpt.RunCheckpoint(str(tmp_path / "none")))
    with pytest.raises(cb.NonFiniteLossError, match="no checkpoint is kept"):
        guard.on_train_batch_end(0, {"loss": float("nan")})
    guard = cb.NonFiniteLossGuard(loader)
    with pytest.raises(cb.NonFiniteLossError, match="the checkpoint of epoch 1"):
        guard.on_train_batch_end(0, {"loss": float("inf")})


def test_exploding_run_stops_with_one_truthful_line(tmp_path):
    run = Run(tmp_path, "boom", "--model", "byol", "--base_lr", "1e6")
    assert run.wait() == 3, run.stderr[-3000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("train.py: error: Non-finite") and "Traceback" not in run.stderr
    epoch = checkpoint_epoch(str(tmp_path / "boom"))
    if epoch:
        assert f"the checkpoint of epoch {epoch}" in last
        with np.load(str(tmp_path / "boom" / "checkpoint" / f"state-{epoch}.npz")) as saved:
            assert all(np.all(np.isfinite(saved[k])) for k in saved.files
                       if saved[k].dtype.kind == "f")
    else:
        assert "no checkpoint is kept" in last


# ---------------------------------------------------------------------------
# Disk faults: read-only and full results folders (tmpfs mounts; root only).
# ---------------------------------------------------------------------------

@pytest.fixture
def mount(tmp_path):
    """``mount(name, options)`` mounts a tmpfs at tmp_path/name; unmounted at the end."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI and the dev machines run as root)")
    mounted = []

    def make(name, options):
        point = tmp_path / name
        point.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)],
                       check=True)
        mounted.append(point)
        return point

    try:
        yield make
    finally:
        for point in reversed(mounted):
            subprocess.run(["umount", "-l", str(point)], check=False)


def one_line(run, code):
    assert run.proc.returncode == code, run.stderr[-3000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    return run.stderr.strip().splitlines()[-1]


def test_read_only_results_folder_is_one_line_before_any_work(mount):
    read_only = mount("ro", "ro,size=1m")
    started = time.time()
    run = Run(read_only / "sub", "x", "--model", "byol")
    run.wait()
    assert one_line(run, 4) == (f"train.py: error: cannot write {read_only}/sub/x: "
                                     "Read-only file system")
    assert time.time() - started < 60 and os.listdir(read_only) == []


def test_full_disk_keeps_the_last_checkpoint_and_resumes(mount):
    disk = mount("disk", "size=16m")  # one checkpoint of this run is ~2 MB
    folder = disk / "r" / "full"
    ballast = disk / "ballast"
    run = Run(disk / "r", "full", "--model", "byol")

    def fill_after_epoch_1():
        if checkpoint_epoch(str(folder)) < 1:
            return False
        with open(ballast, "wb") as f:
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        return True

    end = time.time() + 300
    while not fill_after_epoch_1():
        assert run.proc.poll() is None and time.time() < end, run.stderr[-3000:]
        time.sleep(0.002)
    run.wait()
    last = one_line(run, 4)
    assert last.startswith(f"train.py: error: cannot write {folder}/"), last
    assert "No space left on device" in last
    # what was there stays intact: the checkpoint of epoch 1, run.json, config.json
    assert checkpoint_epoch(str(folder)) == 1
    with np.load(str(folder / "checkpoint" / "state-1.npz")) as saved:
        assert len(saved.files) > 10
    assert json.loads((folder / "run.json").read_text())["status"] == "pretraining"
    assert not [f for _, _, fs in os.walk(folder) for f in fs if f.endswith(".tmp")]
    os.remove(ballast)
    done = Run(disk / "r", "full", "--model", "byol", "--resume")
    assert done.wait() == 0, done.stderr[-3000:]
    assert [(r["phase"], r["epoch"]) for r in history(str(folder))] == [
        ("pretrain", "1"), ("pretrain", "2"), ("pretrain", "3"), ("probe", "1"), ("probe", "2")]


def test_device_augmentation_draws_follow_the_step_counter():
    """augment_on=device: the two views of a step are drawn from (seed, step), so a
    model restored at step k draws what the uninterrupted one drew, whatever the
    global random state."""
    import keras
    import tensorflow as tf

    from config import get_config
    from models import build_model, build_optimizer
    config = get_config("byol").replace(backbone="alexnet", width=0.0625, image_size=16,
                                        augment_on="device", batch_size=8)
    images = np.random.default_rng(0).integers(0, 256, (8, 16, 16, 3), np.uint8)

    from experiments.checkpoint import training_state
    keras.utils.set_random_seed(0)
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=2))
    model.optimizer.build([v for v, _ in model.trainable_with_decay()])
    state = [(v, np.array(v.numpy())) for _, v in training_state(model)]

    def loss_at(step, burn):
        for v, a in state:  # back to the same weights
            v.assign(a)
        model.step_counter.assign(step)
        tf.random.uniform([burn])  # moves the global random state
        return float(model.train_on_batch(images, return_dict=True)["loss"])

    a = loss_at(3, 1)
    assert loss_at(3, 7) == a
    assert loss_at(4, 1) != a
