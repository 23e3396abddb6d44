"""The benchmark scripts run and print their figure last (no timing is asserted)."""

import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def last_line(script, *args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def test_train_step_benchmark_prints_images_per_second():
    line = last_line("train_step.py", "--model", "directpred", "--width", "0.0625",
                     "--image_size", "16", "--batch_size", "8", "--warmup_steps", "1",
                     "--steps", "2")
    assert re.fullmatch(r"images_per_s=\d+(\.\d+)?", line), line


def test_input_pipeline_benchmark_prints_pairs_per_second():
    line = last_line("input_pipeline.py", "--num_images", "256", "--batch_size", "32",
                     "--warmup", "1", "--batches", "2", "--noxla")
    assert re.fullmatch(r"pairs_per_s=\d+(\.\d+)?", line), line
