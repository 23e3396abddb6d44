"""The paper's Table 8 DirectPred row on an accelerator, under JAX, in one call.

For a machine with JAX and a GPU but no TensorFlow and no network (docs/backends.md,
"A run on an accelerator"). It

1. installs carried wheels (``--wheels DIR``: Keras and what it needs there) into a
   scratch folder on ``sys.path``;
2. unpacks the CIFAR-10 image-folder tarball (``--data``, e.g. a carried copy of
   ``../shared/data/cifar10-jpeg.tar.gz``; or an unpacked folder) and reads it through
   the image-folder dataset, decoded once into memory;
3. trains ``get_config("direct_pred")`` (ResNet-18, published settings) under
   ``KERAS_BACKEND=jax`` with augmentation on the device, ``--mixed_precision``
   (default bfloat16) and ``--batch_size`` (default 512, with the linear
   learning-rate scaling 0.03 x 512 / 128 stated in the output), stopping cleanly
   after the last epoch that fits the wall-clock ``--budget_s``;
4. fits the linear probe on the device and prints, last,
   ``epochs=E top1=T pairs_per_s=P``; ``OUT/device_run.json`` holds the same and more,
   ``OUT/run/`` the results folder of ``train.py``.

    python experiments/scripts/device_run.py --wheels .whl \\
        --data .device_data/cifar10-jpeg.tar.gz --out $OUT --budget_s 300
"""

import argparse
import glob
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: The published setting is batch 128 at lr 0.03; larger batches scale it linearly.
PUBLISHED_BATCH, PUBLISHED_LR = 128, 0.03


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True,
                        help="CIFAR-10 image-folder tarball (*.tar.gz) or unpacked folder")
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--wheels", default=None, help="folder of wheels to install first")
    parser.add_argument("--budget_s", type=float, default=300.0,
                        help="wall-clock budget of pre-training, seconds")
    parser.add_argument("--epochs", type=int, default=100, help="planned epochs (paper: 100)")
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--mixed_precision", default="bfloat16",
                        choices=("none", "float16", "bfloat16"))
    parser.add_argument("--width", type=float, default=1.0, help="ResNet-18 width (1 = paper)")
    parser.add_argument("--probe_epochs", type=int, default=50)
    parser.add_argument("--max_train_examples", type=int, default=None)
    parser.add_argument("--max_test_examples", type=int, default=None)
    parser.add_argument("--image_size", type=int, default=None)
    parser.add_argument("--verbose", type=int, default=2)
    args = parser.parse_args(argv)
    for name in ("budget_s", "epochs", "batch_size", "probe_epochs"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be > 0. Received: {getattr(args, name)}")
    if not os.path.exists(args.data):
        parser.error(f"--data {args.data!r} does not exist")
    return args


def install_wheels(folder):
    """``pip install --no-index --no-deps --target`` of every wheel in ``folder``;
    the target goes first on ``sys.path``."""
    wheels = sorted(glob.glob(os.path.join(folder, "*.whl")))
    if not wheels:
        raise SystemExit(f"device_run.py: error: no *.whl in --wheels {folder!r}")
    target = tempfile.mkdtemp(prefix="device_run_site_")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                    "--no-compile", "--no-cache-dir", "--target", target, *wheels], check=True)
    sys.path.insert(0, target)
    return [os.path.basename(w) for w in wheels]


def image_folder(data):
    """The folder with ``train/`` and ``test/``: ``data`` itself, or ``data`` unpacked."""
    if os.path.isdir(data):
        return data
    scratch = tempfile.mkdtemp(prefix="device_run_data_")
    with tarfile.open(data) as tar:
        tar.extractall(scratch, filter="data")
    for here, dirs, _ in os.walk(scratch):
        if "train" in dirs and "test" in dirs:
            return here
    raise SystemExit(f"device_run.py: error: {data!r} holds no train/ and test/ folders")


def make_config(args, data_dir):
    import config as config_lib
    lr = PUBLISHED_LR * args.batch_size / PUBLISHED_BATCH
    optional = {name: getattr(args, name) for name in
                ("image_size", "max_train_examples", "max_test_examples")
                if getattr(args, name) is not None}
    return config_lib.get_config(
        "direct_pred", dataset="folder", data_dir=data_dir, batch_size=args.batch_size,
        learning_rate=lr, epochs_pretraining=args.epochs, epochs_finetuning=args.probe_epochs,
        mixed_precision=args.mixed_precision, width=args.width, augment_on="device",
        jit_compile=True, knn_every=0, **optional)


def budget_callback(budget_s):
    """Stops ``fit`` after the last epoch such that another one (as long as the last)
    would exceed the budget; counts the epochs and steps done."""
    import keras

    class WallClockBudget(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.began = self.epoch_began = None
            self.epochs = 0
            self.steps = 0
            self.epoch_seconds = []  # wall seconds of each epoch

        def on_train_begin(self, logs=None):
            self.began = time.time()

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_began = time.time()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += 1

        def on_epoch_end(self, epoch, logs=None):
            now = time.time()
            self.epochs += 1
            self.epoch_seconds.append(now - self.epoch_began)
            if now - self.began + self.epoch_seconds[-1] > budget_s:
                self.model.stop_training = True

    return WallClockBudget()


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    os.environ["KERAS_BACKEND"] = "jax"
    wheels = install_wheels(args.wheels) if args.wheels else []
    sys.path.insert(0, ROOT)
    import jax
    import keras
    if keras.backend.backend() != "jax":
        raise SystemExit(f"device_run.py: error: Keras backend {keras.backend.backend()!r}, "
                         "not jax (set before keras was imported)")
    from experiments.training import train

    data_dir = image_folder(args.data)
    config = make_config(args, data_dir)
    budget = budget_callback(args.budget_s)
    os.makedirs(args.out, exist_ok=True)
    print(f"device_run: {jax.devices()} | {config.describe()} | batch {config.batch_size}, "
          f"lr {config.learning_rate:g} (linear scaling of {PUBLISHED_LR} at batch "
          f"{PUBLISHED_BATCH}), {config.mixed_precision}, budget {args.budget_s:g} s",
          flush=True)
    metrics = train(config, "run", results_dir=args.out, overwrite=True,
                    verbose=args.verbose, callbacks=(budget,))
    # Steady state: the epochs after the first (which holds the compile).
    steady = budget.epoch_seconds[1:] or budget.epoch_seconds
    steps_per_epoch = budget.steps // max(budget.epochs, 1)
    pairs_per_s = steps_per_epoch * config.batch_size * len(steady) / max(sum(steady), 1e-9)
    result = {
        "epochs": budget.epochs, "planned_epochs": args.epochs,
        "top1": metrics["top1"], "top5": metrics["top5"], "pairs_per_s": pairs_per_s,
        # The published protocol's figure (best test top-1 over the probe epochs, official
        # linear_feature_eval.py), the one to set beside the paper's 85.21.
        "top1_test_selected": metrics.get("best_test_top1_test_selected"),
        "published_top1": 85.21, "config": config.name, "batch_size": config.batch_size,
        "learning_rate": config.learning_rate, "mixed_precision": config.mixed_precision,
        "width": config.width, "budget_s": args.budget_s,
        "pretrain_seconds": sum(budget.epoch_seconds), "first_epoch_seconds":
            budget.epoch_seconds[0] if budget.epoch_seconds else None,
        "total_seconds": time.time() - started, "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__, "keras": keras.__version__, "wheels": wheels,
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(os.path.join(args.out, "device_run.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"epochs={result['epochs']} top1={result['top1']:.4f} "
          f"top1_test_selected={result['top1_test_selected']:.4f} "
          f"pairs_per_s={result['pairs_per_s']:.1f}", flush=True)
    return result


if __name__ == "__main__":
    main()
