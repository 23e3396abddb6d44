"""train.py / test.py end to end on synthetic data, and their flag handling."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ["--dataset", "synthetic", "--max_train_examples", "48",
              "--max_test_examples", "24", "--batch_size", "16", "--width", "0.0625",
              "--image_size", "16", "--epochs_pretraining", "2", "--epochs_finetuning", "2",
              "--knn_every", "1", "--verbose", "0"]
#: With --eigenspace (eigenspace_every is refused without it).
EIGEN_FLAGS = ["--eigenspace", "--eigenspace_every", "1"]


def run(script, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def printed(output, key):
    line = [l for l in output.splitlines() if l.startswith("top1=")][-1]
    return dict(part.split("=") for part in line.split())[key]


def tree_digest(path):
    digest = hashlib.sha256()
    for folder, _, files in sorted(os.walk(path)):
        for name in sorted(files):
            with open(os.path.join(folder, name), "rb") as f:
                digest.update(name.encode() + f.read())
    return digest.hexdigest()


@pytest.mark.parametrize("model", ["byol", "simsiam", "directpred", "directcopy"])
def test_train_then_test_end_to_end(tmp_path, model):
    results = str(tmp_path)
    done = run("train.py", "--model", model, *EIGEN_FLAGS, "--name", "run",
               "--results_dir", results, *TINY_FLAGS)
    assert done.returncode == 0, done.stderr[-3000:]
    folder = tmp_path / "run"
    for name in ["config.json", "run.json", "encoder.weights.h5", "encoder.keras",
                 "siamese.weights.h5", "classifier/classifier.keras", "history.csv",
                 "metrics.json", "eigenspace_results/eigenspace.npz",
                 "eigenspace_results/eigenspace.json", "training_curves.png",
                 "eigenspace.png"]:
        assert (folder / name).is_file(), name
    assert any((folder / "logs").rglob("events.out.tfevents*"))
    assert not (folder / "checkpoint").exists()
    saved = config_lib.Config.from_json((folder / "config.json").read_text())
    # The CLI's saved config is the API's for the same inputs (one resolver).
    assert saved == config_lib.get_config(
        model, dataset="synthetic", max_train_examples=48, max_test_examples=24,
        batch_size=16, width=0.0625, image_size=16, epochs_pretraining=2,
        epochs_finetuning=2, knn_every=1, eigenspace=True, eigenspace_every=1)
    metrics = json.loads((folder / "metrics.json").read_text())
    with open(folder / "history.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["phase"], int(r["epoch"])) for r in rows] == [
        ("pretrain", 1), ("pretrain", 2), ("probe", 1), ("probe", 2)]
    assert float(rows[1]["knn_accuracy"]) == pytest.approx(metrics["knn_accuracy"])
    from experiments.eigenspace import load_eigenspace
    assert [r["epoch"] for r in load_eigenspace(str(folder / "eigenspace_results"))] == [0, 1, 2]
    import keras
    import models  # noqa: F401  registers SiameseNetwork / ClassificationNetwork
    encoder = keras.models.load_model(str(folder / "encoder.keras"))
    assert encoder.output.shape[-1] == 32
    classifier = keras.models.load_model(str(folder / "classifier/classifier.keras"))
    assert classifier(np.zeros((2, 16, 16, 3), "float32")).shape == (2, 10)

    evaluated = run("test.py", "--name", "run", "--results_dir", results)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert float(printed(evaluated.stdout, "top1")) == pytest.approx(metrics["top1"], abs=1e-6)
    assert float(printed(evaluated.stdout, "top5")) == pytest.approx(metrics["top5"], abs=1e-6)
    assert float(printed(done.stdout, "top1")) == pytest.approx(metrics["top1"], abs=1e-6)
    assert "eigenspace.png" in evaluated.stdout


def test_test_py_only_vis_draws_without_evaluating(tmp_path):
    done = run("train.py", "--config", "eigenspace_experiment", "--name", "v",
               "--results_dir", str(tmp_path), "--eigenspace_every", "1", *TINY_FLAGS,
               "--set", "knn_k=5")
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "v" / "config.json").read_text())
    assert saved["knn_k"] == 5  # --set is saved like any flag
    os.remove(tmp_path / "v" / "eigenspace.png")
    shown = run("test.py", "--name", "v", "--results_dir", str(tmp_path), "--only", "vis")
    assert shown.returncode == 0, shown.stderr[-2000:]
    assert "top1=" not in shown.stdout
    assert (tmp_path / "v" / "eigenspace.png").is_file()


def one_line_error(done):
    lines = [l for l in done.stderr.strip().splitlines() if "error" in l.lower()]
    assert done.returncode != 0
    assert lines, done.stderr[-2000:]
    return lines[-1]


def test_bad_inputs_exit_non_zero_and_leave_results_untouched(tmp_path):
    results = str(tmp_path)
    assert run("train.py", "--model", "byol", "--name", "keep", "--results_dir", results,
               *TINY_FLAGS).returncode == 0
    before = tree_digest(tmp_path / "keep")
    again = run("train.py", "--model", "byol", "--name", "keep", "--results_dir", results,
                *TINY_FLAGS)
    assert "--overwrite" in one_line_error(again)
    missing = run("train.py", "--model", "byol", "--name", "keep", "--results_dir", results,
                  "--overwrite", *TINY_FLAGS[:0], "--dataset", "folder", "--data_dir",
                  str(tmp_path / "nowhere"), "--verbose", "0")
    assert "nowhere" in one_line_error(missing)
    both = run("train.py", "--model", "byol", "--config", "simsiam", "--name", "keep",
               "--results_dir", results, "--overwrite")
    assert "exclude" in one_line_error(both)
    assert tree_digest(tmp_path / "keep") == before

    assert "nothing" in one_line_error(run("test.py", "--name", "nothing",
                                           "--results_dir", results))
    run_json = tmp_path / "keep" / "run.json"
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps({**info, "status": "pretrained"}))
    assert "classifier" in one_line_error(run("test.py", "--name", "keep",
                                              "--results_dir", results))
    run_json.write_text(json.dumps({**info, "format_version": 99}))
    assert "format" in one_line_error(run("test.py", "--name", "keep",
                                          "--results_dir", results))
    os.makedirs(tmp_path / "stranger")
    assert "not a results folder" in one_line_error(run("test.py", "--name", "stranger",
                                                        "--results_dir", results))


# ---- flag -> Config mapping (no subprocess) ---------------------------------------

@pytest.fixture(scope="module")
def train_module():
    sys.path.insert(0, ROOT)
    import train
    return train


@pytest.mark.parametrize("flag,value,field", [
    ("epochs_pretraining", 3, "epochs_pretraining"), ("epochs_finetuning", 4,
                                                      "epochs_finetuning"),
    ("symmetry", True, "symmetry"), ("eigenspace", True, "eigenspace"),
    ("loss", "l2", "loss"), ("dataset", "folder", "dataset"), ("data_dir", "/data", "data_dir"),
    ("image_size", 24, "image_size"), ("batch_size", 64, "batch_size"),
    ("max_train_examples", 100, "max_train_examples"),
    ("max_test_examples", 50, "max_test_examples"), ("width", 0.5, "width"),
    ("backbone", "resnet50", "backbone"),
    ("mixed_precision", "bfloat16", "mixed_precision"), ("jit_compile", True, "jit_compile"),
    ("augment_on", "device", "augment_on"), ("knn_every", 0, "knn_every"),
    ("eigenspace_every", 2, "eigenspace_every"), ("seed", 7, "seed"),
    ("optimizer", "lars", "optimizer"), ("base_lr", 0.3, "learning_rate"),
    ("lr_schedule", "warmup_cosine", "lr_schedule"), ("warmup_epochs", 10, "warmup_epochs"),
    ("warmup_lr", 1e-3, "warmup_lr"), ("final_lr", 1e-4, "final_lr"),
    ("lr_scaling", "linear", "lr_scaling"), ("weight_decay", 1e-6, "weight_decay"),
    ("momentum", 0.8, "momentum"), ("strategy", "mirrored", "strategy"),
    ("probe_learning_rate", 0.01, "probe_learning_rate"),
    ("probe_weight_decay", 0.0, "probe_weight_decay"),
    ("probe_batch_size", 32, "probe_batch_size"),
    ("probe_protocol", "official", "probe_protocol")])
def test_every_override_flag_reaches_the_config(train_module, flag, value, field):
    assert flag in train_module.OVERRIDES
    # Each flag with a method that uses it (config.OPTION_RULES).
    values = {"model": "byol" if flag == "symmetry" else "directpred", flag: value}
    if flag in ("warmup_epochs", "warmup_lr", "final_lr"):
        values["lr_schedule"] = "warmup_cosine"  # they apply to that schedule only
    if flag == "eigenspace_every":
        values["eigenspace"] = True
    config = train_module.make_config(values)
    assert getattr(config, field) == value
    assert getattr(config_lib.get_config(values["model"]), field) != value


def test_loss_flag_is_refused_where_the_method_has_no_such_loss(train_module):
    assert train_module.make_config({"model": "simsiam", "loss": "l2"}).loss == "l2"
    with pytest.raises(ValueError, match="loss"):
        train_module.make_config({"model": "simclr", "loss": "l2"})


def test_unset_flags_keep_the_factory_values(train_module):
    assert train_module.make_config({"config": "direct_pred_freq_5"}) == \
        config_lib.get_direct_pred_freq_5()
    assert train_module.make_config({}) == config_lib.get_byol()


def test_model_and_config_flags(train_module):
    assert train_module.make_config({"model": "directcopy"}) == config_lib.get_direct_copy()
    with pytest.raises(ValueError, match="exclude"):
        train_module.make_config({"model": "byol", "config": "simsiam"})
    with pytest.raises(ValueError, match=r"Unknown --config 'nonsense'\. Valid: "):
        train_module.make_config({"config": "nonsense"})


def test_one_layer_predictor(train_module):
    for model in ("byol", "simsiam"):
        config = train_module.make_config({"model": model, "one_layer_predictor": True})
        assert config.predictor == "linear"
    for model in ("directpred", "directcopy"):
        with pytest.raises(ValueError, match="one_layer_predictor"):
            train_module.make_config({"model": model, "one_layer_predictor": True})


def test_stl10_preset_and_explicit_flags_win(train_module):
    config = train_module.make_config({"dataset": "stl10"})
    assert config.image_size == 96 and config.blur_prob > 0
    assert config.jitter == (0.8, 0.8, 0.8, 0.2)
    assert train_module.make_config({"dataset": "stl10", "image_size": 64}).image_size == 64


def test_set_reaches_any_field_typed_and_checked_like_a_flag(train_module):
    config = train_module.make_config({"model": "directpred", "set": [
        "predictor_eps=0.05", "predictor_freq=5", "crop_scale=0.2,1.0", "corr_center=true"]})
    assert config == config_lib.get_config("directpred", predictor_eps=0.05, predictor_freq=5,
                                           crop_scale=(0.2, 1.0), corr_center=True)
    assert train_module.make_config({"set": ["dataset=stl10"]}).image_size == 96  # its preset
    for values, words in [({"set": ["width=0.5"], "width": 0.25}, "--width gives too"),
                          ({"set": ["seed=1", "seed=2"]}, "another --set gives too"),
                          ({"set": ["predictor_eps=0.05"]}, "predictor_eps applies to"),
                          ({"set": ["width"]}, "Expected FIELD=VALUE")]:
        with pytest.raises(ValueError, match=words):
            train_module.make_config(values)


def test_resume_checks_set_fields_against_the_saved_config(train_module, tmp_path):
    saved = config_lib.get_config("directpred", predictor_eps=0.05)
    (tmp_path / "config.json").write_text(saved.to_json())
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1, "status": "pretraining"}))
    assert train_module.resume_config(str(tmp_path), {"set": ["predictor_eps=0.05"]}) == saved
    assert train_module.resume_config(str(tmp_path), {"set": ["probe_batch_size=64"]}) == \
        saved.replace(probe_batch_size=64)
    with pytest.raises(ValueError, match=r"--set predictor_eps=0.1 \(saved 0.05\)"):
        train_module.resume_config(str(tmp_path), {"set": ["predictor_eps=0.1"]})


@pytest.mark.parametrize("args, words", [
    (["--set", "predictor_epss=0.1"], "did you mean 'predictor_eps'?"),
    (["--set", "flip_prob=1.5"], "config.flip_prob must be in [0, 1]. received: flip_prob=1.5"),
    (["--set", "crop_scale=0.9,0.1"], "received: crop_scale=(0.9, 0.1)"),
    (["--set", "seed=abc"], "config.seed takes a value of type int")])
def test_bad_set_exits_2_in_one_line_and_writes_nothing(tmp_path, args, words):
    done = run("train.py", "--name", "x", "--results_dir", str(tmp_path / "r"), *args)
    assert done.returncode == 2, done.stderr[-2000:]
    assert words in one_line_error(done).lower()
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("flag,value", [("epochs_finetuning", "0"),
                                        ("probe_learning_rate", "0"),
                                        ("probe_weight_decay", "-1"),
                                        ("probe_batch_size", "0")])
def test_options_of_the_probe_are_refused_before_pre_training(tmp_path, flag, value):
    """The README's promise: bad input exits 2 before anything is written (the probe
    runs after pre-training; a bad probe option must not cost a pre-training)."""
    done = run("train.py", "--name", "stuck", "--results_dir", str(tmp_path),
               *TINY_FLAGS, f"--{flag}", value)
    assert done.returncode == 2, done.stderr[-2000:]
    assert flag in one_line_error(done) and "Received" in one_line_error(done)
    assert not os.listdir(tmp_path)


# ---- console: exit codes, help, resume from the folder, logs, Ctrl-C -----------------

def test_help_exits_0_grouped_and_bad_flags_exit_2(tmp_path):
    shown = run("train.py", "--help")
    assert shown.returncode == 0, shown.stderr[-2000:]
    for group in ("Run:", "Data:", "Model:", "Pre-training:", "Linear probe:", "Monitors:"):
        assert group in shown.stdout
    assert "direct_pred_freq_5" in shown.stdout.split("Run:")[0]  # factories listed
    assert "(default: the factory's value)" in shown.stdout
    assert "--set=VALUE (repeatable)" in shown.stdout.split("Any field:")[1]
    assert "0.03" not in shown.stdout and "4e-4" not in shown.stdout  # no BYOL defaults
    assert run("test.py", "--help").returncode == 0
    for script, args, words in [
            ("train.py", ["--bogus", "1"], "bogus"),
            ("train.py", ["--name", "x", "--width", "wide"], "width"),
            ("train.py", ["--name", "x", "positional"], "positional"),
            ("train.py", ["--name", "x", "--dataset", "cifar-10"], "did you mean 'cifar10'"),
            ("train.py", ["--name", "x", "--config", "directpred_freq_5"],
             "did you mean 'direct_pred_freq_5'"),
            ("test.py", ["--bogus"], "bogus")]:
        done = run(script, "--results_dir", str(tmp_path), *args)
        assert done.returncode == 2, (args, done.stderr[-2000:])
        assert words in one_line_error(done).lower(), done.stderr
    assert not os.listdir(tmp_path)


def test_resume_reads_the_saved_config_and_refuses_disagreeing_flags(train_module, tmp_path):
    saved = config_lib.get_config("directpred", dataset="synthetic", epochs_pretraining=3)
    (tmp_path / "config.json").write_text(saved.to_json())
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1,
                                                   "status": "pretraining"}))
    assert train_module.resume_config(str(tmp_path), {}) == saved
    same = {"model": "directpred", "epochs_pretraining": 3, "dataset": "synthetic"}
    assert train_module.resume_config(str(tmp_path), same) == saved
    probe = train_module.resume_config(str(tmp_path), {"epochs_finetuning": 7})
    assert probe == saved.replace(epochs_finetuning=7)
    with pytest.raises(ValueError, match=r"--model=byol \(saved factory 'direct_pred'\), "
                                         r"--epochs_pretraining=4 \(saved 3\)"):
        train_module.resume_config(str(tmp_path), {"model": "byol", "epochs_pretraining": 4})
    (tmp_path / "run.json").write_text(json.dumps({"format_version": 1, "status": "complete"}))
    with pytest.raises(ValueError, match=r"--epochs_finetuning=7"):
        train_module.resume_config(str(tmp_path), {"epochs_finetuning": 7})
    with pytest.raises(ValueError, match="Nothing to resume"):
        train_module.resume_config(str(tmp_path / "none"), {})


def test_logs_one_plain_line_per_epoch_and_ctrl_c_names_the_resume_command(tmp_path):
    import signal
    import time
    env = {**os.environ}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the script quiets the framework itself
    flags = list(TINY_FLAGS)
    flags[flags.index("--verbose") + 1] = "1"
    # Far more epochs than the test waits for: a child that races ahead of a slow reader
    # (a loaded CI machine) must still be running when the SIGINT arrives.
    flags[flags.index("--epochs_pretraining") + 1] = "5000"
    # A test run launched in the background (CI's `.ci/run` under nohup or `&`) hands its
    # children SIGINT ignored, and train.py rightly leaves an ignored SIGINT ignored: the
    # child gets the default disposition, as a terminal's foreground job has.
    process = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "train.py"), "--name", "cut", "--results_dir",
         str(tmp_path), *flags], cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    lines = []
    deadline = time.time() + 300
    while time.time() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("epoch 2/5000"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    lines += out.splitlines(keepends=True)
    assert process.returncode == 130, err[-2000:]
    epochs = [l for l in lines if l.startswith("epoch ")]
    assert [l.split(":")[0] for l in epochs[:2]] == ["epoch 1/5000", "epoch 2/5000"]
    assert len({l.split(":")[0] for l in epochs}) == len(epochs)  # none printed twice
    assert not any("\x1b" in l or "nan" in l for l in lines)
    assert "knn" in epochs[0]  # knn_every 1: computed every epoch
    message = [l for l in err.splitlines() if l.strip()]
    assert len(message) == 1, err[-3000:]  # no traceback, no framework noise
    assert "checkpoint of epoch" in message[0]
    assert message[0].endswith(f"python train.py --name cut --resume --results_dir {tmp_path}")


def test_the_noise_filter_drops_framework_start_up_lines_only():
    from experiments.console import NOISE
    noise = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to "
        "STDERR",
        "I0000 00:00:1796309490.634415    3000 port.cc:153] oneDNN custom operations are on.",
        "I0000 00:00:1796309508.559867    3179 service.cc:161]   StreamExecutor [0]: Host",
        "To enable the following instructions: AVX2 AVX512F, in other operations, rebuild",
        "W0000 00:00:1796309508.5 3179 device_compiler.h:208] Compiled cluster using XLA!"]
    kept = ["train.py: error: Unknown --dataset 'x'.", "Traceback (most recent call last):",
            "warning: epoch 3: representation collapse", "Fatal Python error: Aborted"]
    assert all(NOISE.match(line) for line in noise)
    assert not any(NOISE.match(line) for line in kept)


def test_console_entry_points_run_the_scripts():
    """setup.py installs nc-ssl-train / nc-ssl-test; they call train.cli and
    experiments.evaluate_cli.cli, which parse sys.argv as the scripts do."""
    setup = open(os.path.join(ROOT, "setup.py")).read()
    assert '"nc-ssl-train=train:cli"' in setup
    assert '"nc-ssl-test=experiments.evaluate_cli:cli"' in setup
    for module, prog in (("train", "nc-ssl-train"), ("experiments.evaluate_cli", "nc-ssl-test")):
        code = (f"import sys; sys.argv = [{prog!r}, '--help']; "
                f"import {module} as m; m.cli()")
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0 and "--name" in done.stdout, done.stderr[-2000:]
