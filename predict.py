"""Score new images with a trained checkpoint: ``python predict.py ckpt_path=... input=DIR_OR_FILE``."""

import hydra

from anomalib_lite.cli.predict import predict
from anomalib_lite.cli.run_folders import run_main


@hydra.main(version_base="1.3", config_path="configs", config_name="predict")
def main(cfg):
    predict(cfg)


if __name__ == "__main__":
    run_main(main)
