"""Export a trained checkpoint as one deployable file: ``python export.py ckpt_path=... format=onnx|torchscript``."""

import hydra

from anomalib_lite.cli.export import export
from anomalib_lite.cli.run_folders import run_main


@hydra.main(version_base="1.3", config_path="configs", config_name="export")
def main(cfg):
    export(cfg)


if __name__ == "__main__":
    run_main(main)
