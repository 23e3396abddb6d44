"""Evaluate a finished run from its results folder (never re-trains).

    python test.py --name run              # test top-1/top-5 + figures
    python test.py --name run --only vis   # figures only (also --only_vis)
"""

import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("name", None, "Run name: reads RESULTS_DIR/NAME.")
flags.DEFINE_string("results_dir", "results", "Parent folder of run folders.")
flags.DEFINE_enum("only", None, ["vis"], "'vis': only draw the figures.")
flags.DEFINE_boolean("only_vis", False, "Same as --only vis.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from experiments.training import evaluate  # imports Keras and its backend
    try:
        if not FLAGS.name:
            raise ValueError("--name is required.")
        result = evaluate(os.path.join(FLAGS.results_dir, FLAGS.name),
                          only_vis=FLAGS.only_vis or FLAGS.only == "vis")
    except ValueError as error:
        print(f"test.py: error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # e.g. figures into a read-only or full results folder
        where = f"{error.filename}: " if error.filename else ""
        print(f"test.py: error: {where}{error.strerror or error}", file=sys.stderr)
        sys.exit(4)
    if "top1" in result:
        from experiments.training import probe_summary
        print(probe_summary(result))
        print(f"top1={result['top1']:.6f} top5={result['top5']:.6f} "
              f"split={result['eval_split']}")
    for path in result["figures"]:
        print(f"figure: {path}")


if __name__ == "__main__":
    app.run(main)
