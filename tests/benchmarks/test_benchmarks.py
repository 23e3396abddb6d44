"""The benchmark scripts run and print their figure last (no timing is asserted)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def output(script, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()


def last_line(script, *args):
    return output(script, *args)[-1]


TINY_STEP = ("--width", "0.0625", "--image_size", "16", "--batch_size", "8",
             "--warmup_steps", "1", "--steps", "2")


def test_train_step_benchmark_prints_images_per_second():
    lines = output("train_step.py", "--model", "directpred", "--reference", *TINY_STEP)
    assert re.fullmatch(r"images_per_s=\d+(\.\d+)?", lines[-1]), lines[-1]
    assert any(line.startswith("bare GradientTape step:") for line in lines), lines
    assert any(line.startswith("bare GradientTape step with the same updates:")
               for line in lines), lines
    assert any(line.startswith("predictor eigendecomposition") for line in lines), lines


def test_train_step_benchmark_runs_a_labelled_method():
    lines = output("train_step.py", "--model", "supcon", "--reference", *TINY_STEP)
    assert re.fullmatch(r"images_per_s=\d+(\.\d+)?", lines[-1]), lines[-1]


def test_input_pipeline_benchmark_prints_pairs_per_second():
    line = last_line("input_pipeline.py", "--num_images", "256", "--batch_size", "32",
                     "--warmup", "1", "--batches", "2", "--noxla")
    assert re.fullmatch(r"pairs_per_s=\d+(\.\d+)?", line), line


def test_train_step_benchmark_under_jax_and_refusals():
    lines = output("train_step.py", "--model", "directpred", "--backend", "jax", *TINY_STEP)
    assert re.fullmatch(r"images_per_s=\d+(\.\d+)?", lines[-1]), lines[-1]
    assert lines[-2].startswith("jax: direct_pred batch 8"), lines[-2]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "train_step.py"),
                           "--backend", "jax", "--reference", *TINY_STEP],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode != 0 and "TensorFlow only" in done.stderr, done.stderr[-2000:]


def test_pointwise_conv_benchmark_prints_the_step_time_ratio():
    lines = output("pointwise_conv.py", "--cases", "0.0625x16", "--batch_size", "4",
                   "--steps", "1", "--rounds", "1")
    assert lines[-2].startswith("width 0.0625 16 px batch 4: Conv2D "), lines
    assert re.fullmatch(r"pointwise_over_conv2d=\d+\.\d+", lines[-1]), lines[-1]


def test_probe_convergence_benchmark_compares_with_lbfgs(tmp_path):
    from config import get_config
    from experiments.training import train
    train(get_config("byol", dataset="synthetic", max_train_examples=32, max_test_examples=16,
                     batch_size=16, width=0.0625, image_size=16, epochs_pretraining=1,
                     epochs_finetuning=2, knn_every=0), "run", results_dir=str(tmp_path),
          verbose=0)
    lines = output("probe_convergence.py", "--name", "run", "--results_dir", str(tmp_path))
    assert any(line.startswith("L-BFGS to tolerance: top-1 ") for line in lines), lines
    assert any(line.startswith("probe auto (full_batch): ") for line in lines), lines
    assert re.fullmatch(r"auto_minus_lbfgs=-?\d+\.\d+", lines[-1]), lines[-1]
