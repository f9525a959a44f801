"""Train and evaluate an anomaly model: ``python train.py --help`` (the same as ``anomalib-lite train``)."""

import sys

from anomalib_lite.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("train", sys.argv[1:], sys.argv[0]))
