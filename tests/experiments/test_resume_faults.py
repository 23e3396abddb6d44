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
        "--knn_every", "1", "--verbose", "0"]
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
    return lambda: any(text in line for line in list(run.lines))


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
    assert "resuming after epoch" in done.stderr
    assert_same_run(str(tmp_path / "clean"), folder)
    if "--eigenspace" in extra:
        from experiments.eigenspace import load_eigenspace
        ra = load_eigenspace(str(tmp_path / "clean" / "eigenspace_results"))
        rb = load_eigenspace(os.path.join(folder, "eigenspace_results"))
        assert [r["epoch"] for r in rb] == [r["epoch"] for r in ra] == [0, 1, 2, 3]
        for x, y in zip(ra, rb):
            np.testing.assert_allclose(y["f_eigenvalues"], x["f_eigenvalues"], rtol=1e-5,
                                       atol=1e-7)
    # --resume on the complete run says so and changes nothing
    before = {p: os.path.getmtime(os.path.join(folder, p)) for p in os.listdir(folder)}
    again = Run(tmp_path, "cut", *args, "--resume")
    assert again.wait() == 0, again.stderr[-3000:]
    assert "already complete" in "".join(again.stdout)
    assert {p: os.path.getmtime(os.path.join(folder, p)) for p in os.listdir(folder)} == before
