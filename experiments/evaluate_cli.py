"""Evaluate a finished run from its results folder (never re-trains).

    python test.py --name run              # test top-1/top-5 + figures
    python test.py --name run --only vis   # figures only

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

HELP_GROUPS = (("Run", ("name", "results_dir", "only", "verbose")),)


def help_text():
    return console.help_text("test.py", __doc__, FLAGS, HELP_GROUPS, factory_default=())


def main():
    try:
        if not FLAGS.name:
            raise ValueError("--name is required.")
        from experiments.training import evaluate, probe_summary  # imports Keras
        result = evaluate(os.path.join(FLAGS.results_dir, FLAGS.name),
                          only_vis=FLAGS.only == "vis")
    except ValueError as error:
        print(f"test.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # e.g. figures into a read-only or full results folder
        where = f"{error.filename}: " if error.filename else ""
        print(f"test.py: error: {where}{error.strerror or error}", file=sys.stderr)
        sys.exit(4)
    except KeyboardInterrupt:
        print("test.py: interrupted (nothing to resume: test.py only reads the run)",
              file=sys.stderr)
        sys.exit(130)
    if "top1" in result:
        print(probe_summary(result))
        print(f"top1={result['top1']:.6f} top5={result['top5']:.6f} "
              f"split={result['eval_split']}")
    for path in result["figures"]:
        print(f"figure: {path}")


def cli(argv=None):
    """``python test.py`` and the ``nc-ssl-test`` console script."""
    console.parse_flags("test.py", FLAGS, sys.argv if argv is None else argv, help_text)
    if FLAGS.verbose < 2:
        console.quiet_framework_logs()
    main()


if __name__ == "__main__":
    cli()
