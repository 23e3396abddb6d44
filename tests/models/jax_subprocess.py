"""Run a worker script under ``KERAS_BACKEND=jax`` with TensorFlow not importable.

The worker's first lines install a ``sys.meta_path`` finder that makes every
``import tensorflow...`` raise ``ImportError`` (the accelerator machine has no
TensorFlow), so a JAX path that still touches TensorFlow fails loudly here.
Inputs and outputs travel as ``.npz`` files.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BLOCKER = textwrap.dedent('''
    import sys

    class _NoTensorFlow:
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ImportError(f"TensorFlow is blocked in this JAX worker: {name}")
            return None

    sys.meta_path.insert(0, _NoTensorFlow())
    for _name in [m for m in sys.modules if m == "tensorflow" or m.startswith("tensorflow.")]:
        del sys.modules[_name]
    sys.path.insert(0, %r)
''') % ROOT


def jax_available():
    try:
        import importlib.util
        return importlib.util.find_spec("jax") is not None
    except (ImportError, ValueError):
        return False


def run_jax_worker(body, tmp_path, inputs=None, timeout=600):
    """Runs ``body`` (Python source; ``INPUTS`` is the loaded npz dict and
    ``save(**arrays)`` writes the outputs) under JAX without TensorFlow and
    returns the saved arrays as a dict."""
    in_path, out_path = tmp_path / "jax_inputs.npz", tmp_path / "jax_outputs.npz"
    np.savez(in_path, **(inputs or {}))
    script = tmp_path / "jax_worker.py"
    script.write_text(BLOCKER + textwrap.dedent(f'''
        import numpy as np
        INPUTS = dict(np.load({str(in_path)!r}, allow_pickle=False))

        def save(**arrays):
            np.savez({str(out_path)!r}, **{{k: np.asarray(v) for k, v in arrays.items()}})
    ''') + textwrap.dedent(body))
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu",
               XLA_FLAGS="--xla_force_host_platform_device_count=1",
               PYTHONPATH=ROOT)
    result = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"JAX worker failed (rc {result.returncode}):\n"
                             f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return dict(np.load(out_path))
