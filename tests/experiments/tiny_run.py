"""One tiny ``train()`` run, in its own process under ``KERAS_BACKEND``: run by
``tests/experiments/test_run_equality.py``, which holds its numbers equal to
``tests/data/tiny_run.json`` (written before the orchestration was refactored).

    KERAS_BACKEND=tensorflow|jax python tests/experiments/tiny_run.py RESULTS_DIR

Prints one JSON line: the per-epoch pre-training losses, the probe's top-1 and a
digest (sum, L2 norm) of every array of ``siamese.weights.h5``.
"""

import csv
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

#: Synthetic data, the smallest backbone, 2 epochs of 2 steps, 1 probe epoch.
TINY = dict(dataset="synthetic", max_train_examples=32, max_test_examples=16, batch_size=16,
            backbone="alexnet", image_size=16, width=0.0625, projector_hidden_dim=16,
            projection_dim=8, epochs_pretraining=2, epochs_finetuning=1, knn_every=0)


def digest(run_dir):
    import h5py
    import numpy as np
    weights = {}
    with h5py.File(os.path.join(run_dir, "siamese.weights.h5"), "r") as f:
        def visit(path, item):
            if isinstance(item, h5py.Dataset):
                array = np.asarray(item[()], dtype=np.float64)
                weights[path] = [float(array.sum()), float(np.sqrt((array ** 2).sum()))]
        f.visititems(visit)
    with open(os.path.join(run_dir, "history.csv"), newline="") as f:
        loss = [float(r["loss"]) for r in csv.DictReader(f) if r["phase"] == "pretrain"]
    with open(os.path.join(run_dir, "metrics.json")) as f:
        top1 = json.load(f)["top1"]
    return {"loss": loss, "top1": top1, "weights": weights}


def main(results_dir):
    from config import get_config
    from experiments.training import train
    train(get_config("direct_pred").replace(**TINY), "tiny", results_dir=results_dir,
          verbose=0)
    print(json.dumps(digest(os.path.join(results_dir, "tiny"))))


if __name__ == "__main__":
    main(sys.argv[1])
