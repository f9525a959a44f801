"""Score new images with a trained checkpoint: ``python predict.py ckpt_path=... input=DIR_OR_FILE``."""

import sys

from anomalib_lite.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("predict", sys.argv[1:], sys.argv[0]))
