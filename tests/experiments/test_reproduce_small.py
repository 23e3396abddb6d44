"""reproduce_small.py --smoke: every row of the table for a few steps on synthetic data."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
    assert (sgd["predictor"], sgd["predictor_lr_multiplier"]) == ("linear", 30.0)
    assert "`byol_baseline` (predictor_lr_multiplier=30.0)" in (tmp_path / "table.md").read_text()
    for row, predictor, eps in (("directpred", "directpred", 0.01),
                                ("directpred_no_ema", "directpred", 0.1),
                                ("directcopy", "directcopy", 0.1)):
        saved = json.loads((tmp_path / row / "config.json").read_text())
        assert (saved["predictor"], saved["predictor_eps"]) == (predictor, eps)
    moco = json.loads((tmp_path / "moco" / "config.json").read_text())
    assert moco["queue_size"] == 4096 and moco["width"] == swav["width"]


def test_default_rows_validation_mode_and_seeds(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--validation_examples", "8",
                           "--rows", "random_init,simclr", "--seeds", "2", "--seed", "3",
                           "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["random_init", "simclr"]
    assert table["settings"]["validation_examples"] == 8
    for row in table["rows"]:
        folders = [row["name"], row["name"] + "_seed4"]
        metrics = [json.loads((tmp_path / f / "metrics.json").read_text()) for f in folders]
        assert [m["eval_split"] for m in metrics] == ["validation"] * 2
        assert [m["num_test"] for m in metrics] == [8, 8]
        assert [json.loads((tmp_path / f / "config.json").read_text())["seed"]
                for f in folders] == [3, 4]
        top1 = [m["top1"] for m in metrics]
        assert [r["seed"] for r in row["seeds"]] == [3, 4]
        assert [r["probe_top1"] for r in row["seeds"]] == top1
        selected = [m["best_test_top1_test_selected"] for m in metrics]
        assert [r["probe_top1_selected"] for r in row["seeds"]] == selected
        assert all(s >= t for s, t in zip(selected, top1))  # the best epoch, the last included
        assert row["probe_top1"] == pytest.approx(np.mean(top1))
        assert row["probe_top1_std"] == pytest.approx(np.std(top1, ddof=1))
    floor, simclr = table["rows"]
    assert floor["probe_gain"] is None and floor["knn_gain"] is None
    for key, gain in (("probe_top1", "probe_gain"), ("knn_accuracy", "knn_gain")):
        diffs = np.array([r[key] for r in simclr["seeds"]]) - [r[key] for r in floor["seeds"]]
        assert simclr[gain] == pytest.approx(diffs.mean())
        assert simclr[f"{gain}_std"] == pytest.approx(np.std(diffs, ddof=1))
    assert "gain over floor" in (tmp_path / "table.md").read_text()
    assert "test-selected (published protocol)" in (tmp_path / "table.md").read_text()
    assert "±" in (tmp_path / "table.md").read_text()
    assert "seeds 3, 4" in (tmp_path / "table.md").read_text()


def test_default_rows_are_the_papers_and_mean_std_skip_missing_values():
    # In a subprocess: the script's absl flags clash with train.py's in one process.
    table = [{"name": "byol", "seeds": [{"seed": 0, "probe_top1": 0.5, "knn_accuracy": 0.4},
                                        {"seed": 1, "probe_top1": 0.7, "knn_accuracy": None},
                                        {"seed": 5, "probe_top1": 0.9, "knn_accuracy": 0.9}]},
             {"name": "random_init",
              "seeds": [{"seed": 1, "probe_top1": 0.35, "knn_accuracy": 0.3},
                        {"seed": 0, "probe_top1": 0.25, "knn_accuracy": 0.2}]}]
    code = ("import json, sys; from experiments.scripts.reproduce_small import ROWS, _mean_std, "
            "add_gains_over_floor; print(json.dumps([[r[0] for r in ROWS], "
            "_mean_std([0.2, None, 0.4]), _mean_std([0.5]), _mean_std([None]), "
            "add_gains_over_floor(json.loads(sys.argv[1])), "
            "add_gains_over_floor(json.loads(sys.argv[1])[:1])]))")
    done = subprocess.run([sys.executable, "-c", code, json.dumps(table)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    names, (mean, std), single, empty, gains, no_floor = json.loads(done.stdout)
    assert names == ["random_init", "byol", "sgd_linear_predictor", "directpred",
                     "directpred_no_ema", "directcopy", "simsiam", "one_layer_no_ema",
                     "one_layer_symmetric_no_ema"]
    assert mean == pytest.approx(0.3) and std == pytest.approx(np.std([0.2, 0.4], ddof=1))
    assert single == [0.5, None] and empty == [None, None]
    # Paired by seed, not by position: seed 5 has no floor run, seed 1 no kNN value.
    byol, floor = gains
    assert byol["probe_gain"] == pytest.approx(0.3)
    assert byol["probe_gain_std"] == pytest.approx(np.std([0.25, 0.35], ddof=1))
    assert byol["knn_gain"] == pytest.approx(0.2) and byol["knn_gain_std"] is None
    assert floor["probe_gain"] is None and floor["knn_gain_std"] is None
    assert no_floor[0]["probe_gain"] is None


def test_missing_data_dir_is_a_one_line_error(tmp_path):
    done = subprocess.run([sys.executable, SCRIPT, "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert "--data_dir is required" in done.stderr


def test_seeds_below_one_is_a_one_line_error_before_anything_is_written(tmp_path):
    results = tmp_path / "table"
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--seeds", "0",
                           "--results_dir", str(results)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2
    assert "--seeds must be >= 1. Received: --seeds=0" in done.stderr
    assert not results.exists()


def test_a_folder_with_another_config_is_never_replaced_silently(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

    def run(*args):
        return subprocess.run([sys.executable, SCRIPT, "--smoke", "--results_dir",
                               str(tmp_path), *args],
                              capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)

    first = run("--rows", "simclr", "--seed", "0")
    assert first.returncode == 0, first.stderr[-3000:]
    metrics = tmp_path / "simclr" / "metrics.json"
    saved, stamp = metrics.read_text(), metrics.stat().st_mtime_ns
    # Another seed writes the first seed's run to the same folder: refused before any row
    # trains (random_init comes first in the table and must not start).
    clash = run("--rows", "random_init,simclr", "--seed", "1")
    assert clash.returncode == 2
    assert "simclr' holds a run with another config" in clash.stderr
    assert "seed (saved 0, now 1)" in clash.stderr and "--overwrite" in clash.stderr
    assert not (tmp_path / "random_init").exists()
    assert metrics.read_text() == saved
    # The same config is reused, not retrained.
    again = run("--rows", "simclr", "--seed", "0")
    assert again.returncode == 0, again.stderr[-3000:]
    assert metrics.stat().st_mtime_ns == stamp
    # An unfinished run of the same config (an interrupted table) is trained again.
    status = tmp_path / "simclr" / "run.json"
    status.write_text(json.dumps({**json.loads(status.read_text()), "status": "pretraining"}))
    metrics.unlink()
    redo = run("--rows", "simclr", "--seed", "0")
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert json.loads(status.read_text())["status"] == "complete" and metrics.exists()
    # --overwrite replaces the folder that holds another config.
    replaced = run("--rows", "simclr", "--seed", "1", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((tmp_path / "simclr" / "config.json").read_text())["seed"] == 1


def test_override_adds_a_typed_field_to_one_row_and_the_table_shows_it(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--rows", "random_init,directcopy",
                           "--override", "directcopy.predictor_eps=0.05",
                           "--override", "directcopy.corr_center=true",
                           "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    saved = json.loads((tmp_path / "directcopy" / "config.json").read_text())
    assert (saved["predictor_eps"], saved["corr_center"], saved["corr_rho"]) == (0.05, True, 0.5)
    floor = json.loads((tmp_path / "random_init" / "config.json").read_text())
    assert (floor["predictor_eps"], floor["corr_center"]) == (0.1, False)
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["rows"][1]["overrides"] == {"predictor_eps": 0.05, "corr_center": True,
                                             "directcopy_norm": "frobenius"}
    assert "`direct_copy` (predictor_eps=0.05, directcopy_norm=frobenius, corr_center=True)" in (
        tmp_path / "table.md").read_text()


@pytest.mark.parametrize("override, message", [
    ("simclr.temperature=0.5", "ROW one of the rows run ['random_init', 'directcopy']"),
    ("directcopy", "Received: --override=directcopy"),
    ("directcopy.no_such_field=1", "Received: 'no_such_field=1'. Valid fields: ["),
    ("directcopy.predictor_eps=abc", "Config.predictor_eps takes a value of type float. "
                                     "Received: predictor_eps='abc'"),
    ("directcopy.predictor_eps=-1", "Config.predictor_eps must be >= 0. Received: "
                                    "predictor_eps=-1.0"),
])
def test_bad_override_is_a_one_line_error_before_anything_trains(tmp_path, override, message):
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--rows", "random_init,directcopy",
                           "--override", override, "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert message in done.stderr
    assert not (tmp_path / "random_init").exists()


def test_successor_rows_smoke(tmp_path):
    """--successors: DirectSet and IsoLoss rows, their recipe with the warm-up shrunk."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, SCRIPT, "--smoke", "--successors", "--rows",
                           "directset_copy,isoloss_no_ema", "--results_dir", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((tmp_path / "table.json").read_text())
    assert [row["name"] for row in table["rows"]] == ["directset_copy", "isoloss_no_ema"]
    for row in table["rows"]:
        assert 0.0 <= row["probe_top1"] <= 1.0
    iso = json.loads((tmp_path / "isoloss_no_ema" / "config.json").read_text())
    assert (iso["predictor"], iso["isoloss"], iso["ema_tau"], iso["warmup_epochs"]) == (
        "directset", True, 0.0, 1)
    assert (tmp_path / "directset_copy" / "eigenspace.png").is_file()
