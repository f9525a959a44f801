"""Re-evaluate a trained checkpoint: ``python eval.py ckpt_path=...``."""

import hydra

from anomalib_lite.cli.evaluate import evaluate
from anomalib_lite.cli.run_folders import run_main


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
def main(cfg):
    evaluate(cfg)


if __name__ == "__main__":
    run_main(main, prefixed=("model",))
