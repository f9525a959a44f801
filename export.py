"""Export a trained checkpoint as one deployable file: ``python export.py ckpt_path=... format=onnx|torchscript``."""

import sys

from anomalib_lite.cli.main import run_command

if __name__ == "__main__":
    sys.exit(run_command("export", sys.argv[1:], sys.argv[0]))
