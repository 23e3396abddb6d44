"""One tiny ``train()`` run under a ``tf.distribute`` strategy, in its own process:
run by ``tests/experiments/test_distribute.py`` (logical devices and
``TF_CONFIG`` must be set before TensorFlow starts).

    python tests/experiments/distributed_worker.py STRATEGY RESULTS_DIR NAME [LOGICAL_CPUS]

Prints the metrics of ``train()`` (with the number of replicas) as one JSON line.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

#: A short run on synthetic data: 32 images, global batch 8 (4 steps), one
#: pre-training epoch with the kNN monitor and one probe epoch.
TINY = dict(dataset="synthetic", max_train_examples=32, max_test_examples=16, batch_size=8,
            backbone="alexnet", image_size=16, width=0.0625, projector_hidden_dim=16,
            projection_dim=8, epochs_pretraining=1,
            epochs_finetuning=1, knn_every=1, knn_k=5)


def main(strategy, results_dir, name, logical_cpus=1):
    import tensorflow as tf
    if logical_cpus > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    from config import get_config
    from experiments.training import train
    config = get_config("direct_pred").replace(strategy=strategy, **TINY)
    metrics = train(config, name, results_dir=results_dir, verbose=0)
    print(json.dumps(metrics))


if __name__ == "__main__":
    args = sys.argv[1:]
    main(args[0], args[1], args[2], int(args[3]) if len(args) > 3 else 1)
