"""Re-evaluate a trained checkpoint: ``python eval.py ckpt_path=...`` (the same as ``anomalib-lite eval``)."""

import sys

from anomalib_lite.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("eval", sys.argv[1:], sys.argv[0]))
