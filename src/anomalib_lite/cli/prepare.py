"""``python scripts/prepare_data.py NAME``: fetch a dataset or ImageNet weights where the internet is reachable."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from anomalib_lite.data.download import DATASETS, prepare_dataset
from anomalib_lite.errors import AnomalibLiteError
from anomalib_lite.models.backbones import BACKBONES, OFFLINE_BACKBONES, fetch_torchvision_weights

ONLINE_BACKBONES = [name for name in BACKBONES if name not in OFFLINE_BACKBONES]


def main(argv: list[str] | None = None) -> int:
    """Command line; returns the exit status (1 with one message on failure)."""
    parser = argparse.ArgumentParser(
        description="Download a dataset into data/<name> (or --root) in the layout train.py reads, or the "
        "ImageNet weights of a torchvision backbone into the torch cache. Needs the internet (or --mirror, --archive).",
        epilog="Examples: prepare_data.py mnist | prepare_data.py cifar10 --root /datasets/cifar10 | "
        "prepare_data.py mvtec | prepare_data.py visa | prepare_data.py btad | prepare_data.py mvtec_ad2 | "
        "prepare_data.py mvtec_loco | prepare_data.py ksdd2 | prepare_data.py mpdd --archive ~/Downloads/MPDD.zip | "
        "prepare_data.py realiad --root /datasets/Real-IAD (checks only) | prepare_data.py weights --name resnet18",
    )
    parser.add_argument("target", choices=[*DATASETS, "weights"], help="what to fetch")
    parser.add_argument("--root", type=Path, help="dataset folder (default: data/<target>); pass it as data.root")
    parser.add_argument("--mirror", help="base URL holding the same file names, e.g. file:///mnt/datasets")
    parser.add_argument(
        "--archive", type=Path, help="a local copy of the dataset's archive, used instead of downloading it"
    )
    parser.add_argument("--name", choices=ONLINE_BACKBONES, default="resnet18", help="backbone, for 'weights'")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.target == "weights":
            print(f"{args.name}: {fetch_torchvision_weights(args.name)}")
        else:
            root = args.root or Path("data") / args.target
            print(prepare_dataset(args.target, root, args.mirror, not args.no_progress, args.archive))
    except AnomalibLiteError as exc:
        print(f"error: {exc}")
        return 1
    return 0
