"""train.py / test.py / device_run.py under KERAS_BACKEND=jax with TensorFlow not
importable (the accelerator machine has none): the same flags, the same results
layout, one-line errors for what needs TensorFlow."""

import csv
import json
import os
import re
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from tests.models.jax_subprocess import BLOCKER, ROOT, jax_available

pytestmark = pytest.mark.skipif(not jax_available(), reason="needs the jax extra")

TINY = ["--dataset", "synthetic", "--max_train_examples", "48", "--max_test_examples", "24",
        "--batch_size", "16", "--width", "0.0625", "--image_size", "16",
        "--epochs_pretraining", "2", "--epochs_finetuning", "2", "--knn_every", "1",
        "--verbose", "0"]


def run_without_tf(tmp_path, script, *args):
    """``python SCRIPT ARGS`` under JAX, every ``import tensorflow`` failing."""
    wrapper = tmp_path / "without_tf.py"
    wrapper.write_text(BLOCKER + "import runpy\nsys.argv = sys.argv[1:]\n"
                       "runpy.run_path(sys.argv[0], run_name='__main__')\n")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, str(wrapper), os.path.join(ROOT, script), *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def printed(stdout):
    line = [l for l in stdout.splitlines() if l.startswith("top1=")][-1]
    return dict(part.split("=") for part in line.split())


def test_directpred_with_eigenspace_trains_and_evaluates_without_tensorflow(tmp_path):
    results = tmp_path / "results"
    done = run_without_tf(tmp_path, "train.py", "--model", "directpred", "--eigenspace",
                          "--eigenspace_every", "1", "--name", "run",
                          "--results_dir", str(results), *TINY)
    assert done.returncode == 0, done.stderr[-4000:]
    run = results / "run"
    for name in ("run.json", "config.json", "encoder.weights.h5", "encoder.keras",
                 "siamese.weights.h5", "classifier/classifier.keras", "history.csv",
                 "metrics.json", "eigenspace_results/eigenspace.npz",
                 "training_curves.png", "eigenspace.png"):
        assert (run / name).exists(), name
    assert not (run / "checkpoint").exists()  # removed once complete
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0.0 <= metrics["top1"] <= 1.0 and metrics["knn_accuracy"] is not None
    with open(run / "history.csv") as f:
        rows = list(csv.DictReader(f))
    pretrain = [r for r in rows if r["phase"] == "pretrain"]
    assert [int(r["epoch"]) for r in pretrain] == [1, 2]
    assert all(np.isfinite(float(r["loss"])) for r in pretrain)
    assert all(r["knn_accuracy"] for r in pretrain)  # the kNN monitor ran every epoch
    records = json.loads((run / "eigenspace_results" / "eigenspace.json").read_text())
    assert records["epochs"] == [0, 1, 2]
    # test.py re-evaluates the saved classifier: the same numbers.
    evaluated = run_without_tf(tmp_path, "test.py", "--name", "run",
                               "--results_dir", str(results))
    assert evaluated.returncode == 0, evaluated.stderr[-4000:]
    # Printed with 6 decimals.
    assert float(printed(evaluated.stdout)["top1"]) == pytest.approx(metrics["top1"], abs=5e-7)


def test_device_augmentation_byol_run_without_tensorflow(tmp_path):
    done = run_without_tf(tmp_path, "train.py", "--model", "byol", "--augment_on", "device",
                          "--name", "dev", "--results_dir", str(tmp_path / "r"), *TINY)
    assert done.returncode == 0, done.stderr[-4000:]
    assert 0.0 <= float(printed(done.stdout)["top1"]) <= 1.0


@pytest.mark.parametrize("flags,expected", [
    (["--dataset", "cifar10"], "dataset='cifar10' is read with tensorflow-datasets"),
    (["--strategy", "mirrored"], "strategy='mirrored' is tf.distribute"),
])
def test_what_needs_tensorflow_is_one_line_error(tmp_path, flags, expected):
    results = tmp_path / "results"
    args = [a for a in TINY]
    if "--dataset" in flags:
        i = args.index("--dataset")
        del args[i:i + 2]
    done = run_without_tf(tmp_path, "train.py", "--name", "x", "--results_dir", str(results),
                          *args, *flags)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("train.py: error: ") and expected in lines[-1], lines[-3:]
    assert not results.exists()


def _tiny_cifar_tarball(path, per_class=8):
    """A tar.gz with the layout of the CIFAR-10 JPEG copy: {train,test}/<class>/*.jpg."""
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = path.parent / "tiny_cifar"
    for split, count in (("train", per_class), ("test", per_class // 2)):
        for c, name in enumerate(("airplane", "cat", "ship")):
            os.makedirs(folder / split / name)
            for i in range(count):
                image = np.full((32, 32, 3), 40 + 80 * c, np.uint8)
                image = np.clip(image + rng.integers(0, 60, image.shape), 0, 255)
                Image.fromarray(image.astype(np.uint8)).save(folder / split / name / f"{i:04d}.jpg")
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder / "train", arcname="train")
        tar.add(folder / "test", arcname="test")
    return path


def test_device_run_dry_run_on_the_cpu(tmp_path):
    data = _tiny_cifar_tarball(tmp_path / "cifar.tar.gz")
    out = tmp_path / "out"
    done = run_without_tf(tmp_path, "experiments/scripts/device_run.py", "--data", str(data),
                          "--out", str(out), "--epochs", "3", "--batch_size", "8",
                          "--width", "0.0625", "--probe_epochs", "2", "--mixed_precision",
                          "bfloat16", "--budget_s", "600", "--verbose", "0")
    assert done.returncode == 0, done.stderr[-4000:]
    last = done.stdout.strip().splitlines()[-1]
    match = re.fullmatch(r"epochs=(\d+) top1=([\d.]+) top1_test_selected=([\d.]+) "
                         r"pairs_per_s=([\d.]+)", last)
    assert match, last
    result = json.loads((out / "device_run.json").read_text())
    assert result["epochs"] == int(match.group(1)) == 3
    assert result["top1"] == pytest.approx(float(match.group(2)), abs=1e-4)
    # The published protocol's figure: the best probe epoch on the test set, the last included.
    assert result["top1_test_selected"] == pytest.approx(float(match.group(3)), abs=1e-4)
    assert result["top1_test_selected"] >= result["top1"]
    assert result["batch_size"] == 8 and result["learning_rate"] == pytest.approx(0.03 * 8 / 128)
    saved = json.loads((out / "run" / "config.json").read_text())
    assert saved["name"] == "direct_pred" and saved["mixed_precision"] == "bfloat16"
    assert saved["augment_on"] == "device"


def test_device_run_stops_at_its_wall_clock_budget(tmp_path):
    data = _tiny_cifar_tarball(tmp_path / "cifar.tar.gz")
    out = tmp_path / "out"
    done = run_without_tf(tmp_path, "experiments/scripts/device_run.py", "--data", str(data),
                          "--out", str(out), "--epochs", "50", "--batch_size", "8",
                          "--width", "0.0625", "--probe_epochs", "1", "--budget_s", "0.001",
                          "--mixed_precision", "none", "--verbose", "0")
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1].startswith("epochs=1 ")
    with open(out / "run" / "history.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f) if r["phase"] == "pretrain"] == ["1"]
