"""Two replicas vs. one device: run by ``tests/models/test_distribute.py`` in a
subprocess, because the two logical CPU devices must be configured before
TensorFlow initialises its devices (which the test session already did).

    python tests/models/mirrored_equality.py CASE [CASE ...]

For each case (a name of :data:`CASES`) the same tiny model, with the same
initial weights, takes two ``fit`` steps on the same global batches once on one
device and once under ``MirroredStrategy`` over two logical CPUs. Prints one
JSON line ``{case: result}``: the per-step logs of both runs, the largest
difference of any model weight, optimizer slot and of F / Wp, and the variables
whose per-replica copies differ.
"""

import json
import os
import sys
import time
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

GLOBAL_BATCH = 8
STEPS = 2
# The small AlexNet (5 conv-BN blocks) traces faster than ResNet-18 (20).
_SMALL = dict(backbone="alexnet", image_size=16, projector="mlp", projection_dim=8,
              projector_hidden_dim=16)

#: case -> (config factory, overrides of tests/models/conftest.py's tiny config).
CASES = {
    "byol": ("byol", {}),  # ResNet-18 (tiny width): BN also in its shortcuts
    "directpred": ("direct_pred", _SMALL),
    "simsiam": ("simsiam", _SMALL),
    "simclr": ("simclr", _SMALL),
    "moco": ("moco", {**_SMALL, "queue_size": 24}),
    # Queue of one global batch: full after step 1 and used (weight 1/R) in step 2.
    "swav": ("swav", {**_SMALL, "num_prototypes": 10, "queue_size": GLOBAL_BATCH,
                      "queue_start_epoch": 0, "freeze_prototypes_epochs": 0}),
    "barlow_twins": ("barlow_twins", _SMALL),
    "supcon": ("supcon", _SMALL),
    # Control: BYOL whose BatchNorm is *not* synchronised must differ.
    "byol_unsynchronized_bn": ("byol", {"backbone": "alexnet", "image_size": 16}),
}


def _data(config, seed=0):
    import numpy as np
    rng = np.random.default_rng(seed)
    n = GLOBAL_BATCH * STEPS
    shape = (n, config.image_size, config.image_size, 3)
    x1 = rng.normal(size=shape).astype("float32")
    x2 = rng.normal(size=shape).astype("float32")
    labels = rng.integers(0, 3, size=n).astype("int64")
    return ((x1, x2), labels) if config.method == "supcon" else (x1, x2)


def _fit(model, data):
    import keras
    import tensorflow as tf
    history = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs=None: history.append(
            {k: float(v) for k, v in logs.items()}))
    dataset = tf.data.Dataset.from_tensor_slices(data).batch(GLOBAL_BATCH)
    model.fit(dataset, epochs=1, verbose=0, callbacks=[record])
    return history


def _build(config, initial_weights=None):
    from models import build_model, build_optimizer
    model = build_model(config)
    model.compile(optimizer=build_optimizer(config, steps_per_epoch=STEPS))
    model.set_total_steps(STEPS, steps_per_epoch=STEPS)
    if initial_weights is not None:
        model.set_weights(initial_weights)
    return model


def _max_difference(a, b):
    """Largest ``max|x - y| / (max|x| + 0.01)`` over variable pairs, and its path."""
    import numpy as np
    worst, name = 0.0, None
    for x, y in zip(a, b):
        x_path = x.path
        assert x.path.split("/")[-1] == y.path.split("/")[-1], (x.path, y.path)
        x, y = np.asarray(x.numpy(), np.float64), np.asarray(y.numpy(), np.float64)
        scale = float(np.max(np.abs(x), initial=0.0)) + 0.01
        diff = float(np.max(np.abs(x - y), initial=0.0)) / scale
        if diff > worst:
            worst, name = diff, x_path
    return worst, name


def _replica_mismatches(strategy, variables):
    """Paths of the variables whose per-replica copies are not bit-identical."""
    import numpy as np
    bad = []
    for v in variables:
        copies = [c.numpy() for c in strategy.experimental_local_results(v.value)]
        if len(copies) < 2:
            bad.append(f"{v.path} (not mirrored)")
        elif not all(np.array_equal(copies[0], c) for c in copies[1:]):
            bad.append(v.path)
    return bad


def run_case(case, strategy):
    import keras
    from backends import tensorflow as tensorflow_backend
    from tests.models.conftest import tiny_config

    started = time.time()
    factory, overrides = CASES[case]
    config = tiny_config(factory, batch_size=GLOBAL_BATCH, **overrides)
    data = _data(config)

    keras.utils.set_random_seed(0)
    single = _build(config)
    initial = [w.numpy() for w in single.weights]
    single_logs = _fit(single, data)

    synchronized = case != "byol_unsynchronized_bn"
    with mock.patch.object(tensorflow_backend, "use_synchronized_bn",
                           lambda s=None: synchronized), strategy.scope():
        keras.utils.set_random_seed(0)
        mirrored = _build(config, initial)
    mirrored_logs = _fit(mirrored, data)

    result = {
        "replicas": strategy.num_replicas_in_sync,
        "synchronized_bn": sorted({layer.synchronized for layer in _bn_layers(mirrored)}),
        "single_logs": single_logs, "mirrored_logs": mirrored_logs,
        "steps": int(mirrored.step_counter.numpy()),
        "weights": _max_difference(single.weights, mirrored.weights),
        "optimizer": _max_difference(single.optimizer.variables, mirrored.optimizer.variables),
        "replica_mismatches": _replica_mismatches(
            strategy, mirrored.weights + mirrored.optimizer.variables),
    }
    if getattr(config, "computed_predictor", False) and config.method == "noncontrastive":
        result["correlation"] = _max_difference([single.correlation],
                                                [mirrored.correlation])
        result["predictor_kernel"] = _max_difference([single.predictor_kernel],
                                                     [mirrored.predictor_kernel])
    result["seconds"] = time.time() - started
    return result


def _bn_layers(model):
    import keras
    found = []
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def main(cases):
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    # One strategy for every case: collectives of two MirroredStrategy objects in
    # one process can collide.
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    results = {case: run_case(case, strategy) for case in cases}
    print(json.dumps(results))


if __name__ == "__main__":
    main(sys.argv[1:] or list(CASES))
