"""Evaluate a finished run from its results folder (never re-trains).

    python test.py --name run              # test top-1/top-5 + figures + evaluations table
    python test.py --name run --only vis   # figures only
    python test.py --name run --protocol knn                          # frozen features
    python test.py --name run --protocol finetune --labels_fraction 0.1
    python test.py --name run --protocol linear --eval_dataset folder --eval_data_dir DIR

Each --protocol run is added to RESULTS_DIR/NAME/evaluations.json (metrics.json, what
train.py recorded, is never touched); the same evaluation again replaces its own entry.
(``nc-ssl-test`` once the package is installed.)
"""

import os
import sys

from absl import flags

from experiments import console

FLAGS = flags.FLAGS
flags.DEFINE_string("name", None, "Run name: reads RESULTS_DIR/NAME.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_enum("only", None, ["vis"], "'vis': only draw the figures.")
flags.DEFINE_integer("verbose", 1, "2: also TensorFlow / JAX start-up logs.")
flags.DEFINE_string("protocol", None,
                    "linear (the run's probe), knn (weighted kNN on frozen features) or "
                    "finetune (the whole network, SimCLR's semi-supervised recipe): "
                    "evaluate the run's encoder and record it in evaluations.json.")
flags.DEFINE_float("labels_fraction", 1.0,
                   "Fraction F in (0, 1] of the labelled train split, class-balanced and "
                   "seeded.")
flags.DEFINE_integer("seed", None, "Seed of the label subset, probe and fine-tuning; "
                     "none: the run's seed.")
flags.DEFINE_string("eval_dataset", None,
                    "Evaluate on another dataset: folder, or a tfds name such as stl10 or "
                    "tf_flowers (TensorFlow), resized to the run's image size; none: the run's "
                    "dataset.")
flags.DEFINE_string("eval_data_dir", None, "Folder of --eval_dataset (ROOT/{train,test}/"
                    "<class>/* for folder; the tfds data_dir otherwise).")
flags.DEFINE_integer("eval_image_size", None, "Input size of the encoder; none: the run's "
                     "image size (another size rebuilds the encoder if it can).")
flags.DEFINE_integer("epochs", None, "linear: probe epochs (none: the run's "
                     "epochs_finetuning); finetune: epochs (none: 60 for F <= 0.01, else 30).")
flags.DEFINE_integer("knn_k", 200, "knn: neighbours (solo-learn's and lightly's).")
flags.DEFINE_float("knn_temperature", 0.1, "knn: vote temperature (solo-learn's and lightly's).")
flags.DEFINE_float("learning_rate", None, "finetune: base learning rate; none: 0.05 x "
                   "batch_size / 256 (SimCLR).")
flags.DEFINE_integer("batch_size", 256, "finetune: batch size (at most the labelled "
                     "examples).")

PROTOCOL_FLAGS = ("labels_fraction", "seed", "eval_dataset", "eval_data_dir",
                  "eval_image_size", "epochs", "knn_k", "knn_temperature", "learning_rate",
                  "batch_size")
HELP_GROUPS = (
    ("Run", ("name", "results_dir", "only", "verbose")),
    ("Evaluation protocol (each run adds to evaluations.json)",
     ("protocol", "labels_fraction", "seed", "epochs", "knn_k", "knn_temperature",
      "learning_rate", "batch_size")),
    ("Transfer", ("eval_dataset", "eval_data_dir", "eval_image_size")),
)


def help_text():
    return console.help_text("test.py", __doc__, FLAGS, HELP_GROUPS, factory_default=())


def _protocol_arguments():
    """The keyword arguments of ``evaluate_protocol`` from the flags (None: not given)."""
    given = [f"--{name}" for name in PROTOCOL_FLAGS if FLAGS[name].present]
    only_vis = FLAGS.only == "vis"
    if FLAGS.protocol is None:
        if given:
            raise ValueError(f"{', '.join(given)} apply to an evaluation protocol: add "
                             "--protocol linear|knn|finetune. Received: "
                             + " ".join(f"{g}={FLAGS[g[2:]].value}" for g in given))
        return None
    if only_vis:
        raise ValueError("--only vis draws the figures without evaluating; it excludes "
                         f"--protocol. Received: --protocol={FLAGS.protocol}")
    given = {name: FLAGS[name].value if FLAGS[name].present else None
             for name in PROTOCOL_FLAGS}  # a protocol refuses an option it does not use
    return dict(
        labels_fraction=FLAGS.labels_fraction, seed=given["seed"],
        dataset=given["eval_dataset"], data_dir=given["eval_data_dir"],
        image_size=given["eval_image_size"],
        **{k: given[k] for k in ("epochs", "knn_k", "knn_temperature", "learning_rate",
                                 "batch_size")}, verbose=int(FLAGS.verbose > 1))


def main():
    try:
        if not FLAGS.name:
            raise ValueError("--name is required.")
        arguments = _protocol_arguments()
        run_dir = os.path.join(FLAGS.results_dir, FLAGS.name)
        from experiments import protocols
        from experiments.training import evaluate, probe_summary  # imports Keras
        entry = None
        if arguments is not None:
            entry = protocols.evaluate_protocol(run_dir, FLAGS.protocol, **arguments)
            result = {"figures": []}
        else:
            result = evaluate(run_dir, only_vis=FLAGS.only == "vis")
        table, figure = protocols.summarise(run_dir)
    except ValueError as error:
        print(f"test.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # e.g. figures into a read-only or full results folder
        where = f"{error.filename}: " if error.filename else ""
        print(f"test.py: error: {where}{error.strerror or error}", file=sys.stderr)
        sys.exit(4)
    except KeyboardInterrupt:
        print("test.py: interrupted (the run's results are as they were)", file=sys.stderr)
        sys.exit(130)
    if entry is not None:
        print(f"{entry['protocol']} on {entry['dataset']} ({entry['labels_fraction']:g} of "
              f"{entry['num_classes']}-class labels, {entry['num_train']} examples): "
              f"top1={entry['top1']:.6f} top5={entry['top5']:.6f} "
              f"split={entry['eval_split']}")
    if "top1" in result:
        print(probe_summary(result))
        print(f"top1={result['top1']:.6f} top5={result['top5']:.6f} "
              f"split={result['eval_split']}")
    if table:
        print(table)
    for path in result["figures"] + ([figure] if figure else []):
        print(f"figure: {path}")


def cli(argv=None):
    """``python test.py`` and the ``nc-ssl-test`` console script."""
    console.parse_flags("test.py", FLAGS, sys.argv if argv is None else argv, help_text)
    if FLAGS.verbose < 2:
        console.quiet_framework_logs()
    main()


if __name__ == "__main__":
    cli()
