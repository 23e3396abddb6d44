"""Evaluate a finished run from its results folder (never re-trains).

    python test.py --name run              # test top-1/top-5 + figures
    python test.py --name run --only vis   # figures only

The same as the ``nc-ssl-test`` console script: experiments/evaluate_cli.py.
"""

from experiments.evaluate_cli import cli

if __name__ == "__main__":
    cli()
