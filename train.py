"""Train and evaluate an anomaly model: ``python train.py --help``."""

import hydra

from anomalib_lite.cli.run_folders import run_main
from anomalib_lite.cli.train import train


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg):
    train(cfg)


if __name__ == "__main__":
    run_main(main)
