"""Before/after guard: a tiny run (tests/experiments/tiny_run.py) gives the loss history,
probe top-1 and final weights stored in tests/data/tiny_run.json, on each backend."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.models.jax_subprocess import ROOT, jax_available

FIXTURE = os.path.join(ROOT, "tests", "data", "tiny_run.json")


@pytest.mark.parametrize("backend", [
    "tensorflow",
    pytest.param("jax", marks=pytest.mark.skipif(not jax_available(), reason="needs jax"))])
def test_tiny_run_matches_the_stored_numbers(backend, tmp_path):
    env = dict(os.environ, KERAS_BACKEND=backend, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "experiments",
                                                        "tiny_run.py"), str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    with open(FIXTURE) as f:
        expected = json.load(f)[backend]
    np.testing.assert_allclose(got["loss"], expected["loss"], rtol=1e-5)
    assert got["top1"] == pytest.approx(expected["top1"], abs=1e-6)
    assert sorted(got["weights"]) == sorted(expected["weights"])
    for path, values in expected["weights"].items():
        np.testing.assert_allclose(got["weights"][path], values, rtol=1e-4, atol=1e-6,
                                   err_msg=path)
