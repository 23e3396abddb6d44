"""Strategies by name, and train() under MirroredStrategy (two logical CPUs) and
MultiWorkerMirroredStrategy (two worker processes on localhost).

Distributed runs happen in subprocesses (``distributed_worker.py``): logical
devices and ``TF_CONFIG`` must be set before TensorFlow starts.
"""

import json
import os
import socket
import subprocess
import sys
import time
import types

import pytest
import tensorflow as tf

import config as config_lib
from experiments.distribute import is_chief, make_strategy

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_worker.py")
TIMEOUT = 240  # seconds per distributed run (a few seconds of training, mostly tracing)


def _env(**extra):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}


def _metrics(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def test_make_strategy_by_name():
    assert make_strategy("default") is tf.distribute.get_strategy()
    assert is_chief(make_strategy("default"))
    with pytest.raises(ValueError, match="'default', 'mirrored', 'multiworker', 'tpu'"):
        make_strategy("horovod")


def test_tpu_strategy_without_tpu_is_a_clear_error():
    try:
        strategy = make_strategy("tpu")
    except ValueError as error:
        assert "tpu" in str(error).lower()
    else:  # pragma: no cover - only on a TPU host
        assert strategy.num_replicas_in_sync >= 1


def test_config_strategy_is_validated():
    assert config_lib.Config().strategy == "default"
    assert config_lib.Config(strategy="multiworker").strategy == "multiworker"
    with pytest.raises(ValueError, match="Config.strategy must be one of"):
        config_lib.Config(strategy="horovod")


def test_global_batch_must_split_evenly_over_replicas():
    from experiments.training import _check_replicas
    three = types.SimpleNamespace(num_replicas_in_sync=3)
    with pytest.raises(ValueError, match="divisible by the 3 replicas"):
        _check_replicas(config_lib.Config(batch_size=128, strategy="mirrored"), three)
    _check_replicas(config_lib.Config(batch_size=129), three)


def test_train_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    done = subprocess.run([sys.executable, WORKER, "mirrored", str(tmp_path), "run", "2"],
                          capture_output=True, text=True, env=_env(), timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-4000:]
    metrics = _metrics(done.stdout)
    assert metrics["replicas"] == 2
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
    assert config_lib.Config.from_json(
        (tmp_path / "run" / "config.json").read_text()).strategy == "mirrored"


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(results_dir):
    """Starts worker 0 (the chief) and worker 1; returns their (returncode, stdout,
    stderr). Both are killed if either outlives :data:`TIMEOUT`."""
    cluster = {"worker": [f"localhost:{port}" for port in _free_ports(2)]}
    workers = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        workers.append(subprocess.Popen(
            [sys.executable, WORKER, "multiworker", str(results_dir), "run"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=_env(TF_CONFIG=tf_config)))
    deadline = time.monotonic() + TIMEOUT
    outputs = []
    try:
        for worker in workers:
            out, err = worker.communicate(timeout=max(deadline - time.monotonic(), 1))
            outputs.append((worker.returncode, out, err))
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.communicate()
    return outputs


def test_train_under_multiworker_strategy_with_two_processes(tmp_path):
    outputs = _run_two_workers(tmp_path)
    if any("address already in use" in err.lower() for _, _, err in outputs):
        outputs = _run_two_workers(tmp_path / "retry")  # a free port was taken meanwhile
        tmp_path = tmp_path / "retry"
    for returncode, _, err in outputs:
        assert returncode == 0, err[-4000:]
    chief, other = (_metrics(out) for _, out, _ in outputs)
    assert chief["replicas"] == other["replicas"] == 2
    # Both workers end with the same encoder (their probes are fitted identically).
    for key in ("pretrain_loss", "z_std", "knn_accuracy", "top1", "top5"):
        assert other[key] == pytest.approx(chief[key], rel=1e-6), key
    # Only the chief writes the results folder.
    assert sorted(os.listdir(tmp_path)) == ["run"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"
