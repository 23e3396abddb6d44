"""The linear probe against a converged multinomial logistic regression on the
features of a trained run (issue 29: is the probe's number the encoder's, or the
probe's?).

    python benchmarks/probe_convergence.py --name tiny               # results/tiny
    python benchmarks/probe_convergence.py --name run --results_dir /tmp/r

Extracts the run's encoder features of its train and evaluation splits (as the
probe does), fits the package's probe with ``auto`` (what runs by default),
``official`` (luckmatters' mini-batch Adam loop) and ``full_batch``, and the same
objective (cross-entropy + coupled L2 on standardised features) solved to tolerance
by SciPy's L-BFGS (tests/models/test_probe_convergence.py's reference). The last
line is ``auto_minus_lbfgs=<points>``.
"""

import os
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FLAGS = flags.FLAGS
flags.DEFINE_string("name", None, "Run name (RESULTS_DIR/NAME with encoder.keras).")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_integer("epochs", None, "Probe epochs (default: the run's epochs_finetuning).")


def main(argv):
    from experiments import console
    console.quiet_framework_logs()  # TensorFlow's / XLA's start-up lines, as train.py
    del argv
    import keras

    import backends
    import models  # noqa: F401  registers the saved classes
    from experiments.run_folder import RunDirectory, read_run
    from models.classifier import extract_features, fit_linear_probe
    from tests.models.test_probe_convergence import reference_top1

    run_dir = os.path.join(FLAGS.results_dir, FLAGS.name)
    _, config = read_run(run_dir)
    backend = backends.get()
    data = backend.load_dataset(config)
    encoder = keras.models.load_model(RunDirectory.from_path(run_dir).encoder_model)
    train = extract_features(encoder, backend.evaluation_dataset(data.train, config))
    test = extract_features(encoder, backend.evaluation_dataset(data.test, config))
    epochs = FLAGS.epochs or config.epochs_finetuning
    print(f"{FLAGS.name}: {len(train[0])} train / {len(test[0])} {data.eval_split} features "
          f"of dimension {train[0].shape[1]}, {data.num_classes} classes, {epochs} epochs")
    began = time.time()
    reference = reference_top1(train, test, data.num_classes, config.probe_weight_decay)
    print(f"L-BFGS to tolerance: top-1 {reference:.4f} ({time.time() - began:.1f} s)")
    results = {}
    for protocol in ("auto", "official", "full_batch"):
        began = time.time()
        _, history = fit_linear_probe(
            encoder, train, test, data.num_classes, epochs=epochs,
            learning_rate=config.probe_learning_rate, weight_decay=config.probe_weight_decay,
            batch_size=config.probe_batch_size, seed=config.seed, protocol=protocol)
        results[protocol] = history["top1"]
        print(f"probe {protocol} ({history['protocol']}): final top-1 {history['top1']:.4f}, "
              f"test-selected best {history['best_test_top1']:.4f} "
              f"({time.time() - began:.1f} s)")
    print(f"auto_minus_lbfgs={100 * (results['auto'] - reference):.2f}")


if __name__ == "__main__":
    flags.mark_flag_as_required("name")
    app.run(main)
