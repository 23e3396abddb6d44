"""reproduce_small.py --smoke: every row of the table for a few steps on synthetic data."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(ROOT, "experiments", "scripts", "reproduce_small.py")


def test_smoke_runs_every_row_and_writes_the_table(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--family",
                           "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "table.json").read_text())
    names = [row["name"] for row in table["rows"]]
    assert names == ["random_init", "byol", "sgd_linear_predictor", "directpred",
                     "directpred_no_ema", "directcopy", "simsiam", "one_layer_no_ema",
                     "one_layer_symmetric_no_ema", "simclr", "supcon", "swav", "moco",
                     "barlow_twins"]
    for row in table["rows"]:
        assert 0.0 <= row["probe_top1"] <= 1.0
    assert (tmp_path / "table.md").read_text().count("\n| ") >= 14
    assert (tmp_path / "table.png").stat().st_size > 0
    assert (tmp_path / "directpred" / "eigenspace.png").is_file()
    assert (tmp_path / "byol" / "eigenspace.png").is_file()
    # The wider family keeps its own recipe, with schedule epochs shrunk to the run.
    swav = json.loads((tmp_path / "swav" / "config.json").read_text())
    assert (swav["optimizer"], swav["lr_schedule"], swav["epochs_pretraining"]) == (
        "larc", "warmup_cosine", 1)
    assert (swav["warmup_epochs"], swav["queue_start_epoch"], swav["eigenspace"]) == (
        1, 0, False)
    sgd = json.loads((tmp_path / "sgd_linear_predictor" / "config.json").read_text())
    assert (sgd["predictor"], sgd["predictor_lr_multiplier"]) == ("linear", 10.0)
    assert "`byol_baseline` (predictor_lr_multiplier=10.0)" in (tmp_path / "table.md").read_text()
    moco = json.loads((tmp_path / "moco" / "config.json").read_text())
    assert moco["queue_size"] == 4096 and moco["width"] == swav["width"]


def test_default_rows_are_the_papers_and_validation_mode_holds_out_train(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--validation_examples", "8",
                           "--rows", "random_init,simclr", "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["random_init", "simclr"]
    assert table["settings"]["validation_examples"] == 8
    for name in ("random_init", "simclr"):
        metrics = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (metrics["eval_split"], metrics["num_test"]) == ("validation", 8)
    from experiments.scripts import reproduce_small
    assert [r[0] for r in reproduce_small.ROWS][-1] == "one_layer_symmetric_no_ema"
    assert "simclr" not in [r[0] for r in reproduce_small.ROWS]


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert "--data_dir is required" in done.stderr
