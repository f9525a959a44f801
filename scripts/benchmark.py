"""Print speed figures.

evaluator: image AUROC + pixel AUROC + AUPRO on random maps with blob-shaped masks,
timed end to end, checked against scikit-learn's ``roc_auc_score`` (``--check``).
    python scripts/benchmark.py evaluator --maps 200 --size 256 [--device cuda] [--check]
inference: a trained checkpoint's ``predict`` per image, after warm-up, at its image size;
``--set`` replaces stored options (e.g. MSFI's weight search off, or another keep_k).
    python scripts/benchmark.py inference --ckpt outputs/.../last.pt [--set model.weight_search.apply=false]
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage

from anomalib_lite.metrics import auroc, pixel_metrics


def random_case(n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` maps (``n×size×size``), masks with a few blobs on half the images, image scores and labels."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, size // 8, size // 8)).astype(np.float32)
    blobs = ndimage.zoom(noise, (1, 8, 8), order=1) > 0.85
    labels = np.arange(n) % 2
    masks = blobs & labels[:, None, None].astype(bool)
    maps = rng.random((n, size, size), dtype=np.float32) + masks * 0.5
    scores = maps.reshape(n, -1).max(1)
    return (torch.from_numpy(maps), torch.from_numpy(masks), torch.from_numpy(scores), torch.from_numpy(labels))


def bench_evaluator(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    maps, masks, scores, labels = (t.to(device) for t in random_case(args.maps, args.size))
    pixels = maps.numel()
    print(f"evaluator: {args.maps} maps of {args.size}×{args.size} ({pixels / 1e6:.1f} M pixels) on {device}")
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    image = auroc(scores, labels)
    pixel = pixel_metrics(maps, masks)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"  image AUROC {image:.6f}  pixel AUROC {pixel.pixel_auroc:.6f}  AUPRO {pixel.aupro:.6f}")
    print(f"  wall time {seconds:.2f} s")
    if device.type == "cuda":
        print(f"  peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    peak_growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 2**20
    print(f"  peak host memory growth {peak_growth:.2f} GiB")
    if args.check:
        from sklearn.metrics import roc_auc_score

        start = time.perf_counter()
        reference = roc_auc_score(masks.cpu().numpy().ravel(), maps.cpu().numpy().ravel())
        print(f"  scikit-learn pixel AUROC {reference:.6f} in {time.perf_counter() - start:.2f} s; "
              f"|difference| {abs(reference - pixel.pixel_auroc):.2e}")  # fmt: skip


def bench_inference(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from anomalib_lite.cli.evaluate import load_trained

    run, model = load_trained(Path(args.ckpt), OmegaConf.from_dotlist(args.set))
    device = torch.device(args.device)
    model.to(device).eval()
    size = run.data.image_size
    images = torch.randn(args.batch, 3, size, size, device=device)
    for _ in range(args.warmup):
        model.predict(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    batches = max(1, args.images // args.batch)
    start = time.perf_counter()
    for _ in range(batches):
        model.predict(images)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    print(f"inference: {run.model.name} from {args.ckpt} {' '.join(args.set)}")
    print(f"  {batches * args.batch} images of {size}×{size} in batches of {args.batch} on {device}: "
          f"{1000 * seconds / (batches * args.batch):.1f} ms per image")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    evaluator = sub.add_parser("evaluator", help="time the exact metrics")
    evaluator.add_argument("--maps", type=int, default=200, help="number of maps (MVTec AD test set: 1725)")
    evaluator.add_argument("--size", type=int, default=256, help="map side in pixels")
    evaluator.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    evaluator.add_argument("--check", action="store_true", help="also compute scikit-learn's pixel AUROC")
    inference = sub.add_parser("inference", help="time a trained model's predict")
    inference.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    inference.add_argument("--set", nargs="*", default=[], help="stored options to replace, key=value")
    inference.add_argument("--images", type=int, default=64, help="images to time (after warm-up)")
    inference.add_argument("--batch", type=int, default=8)
    inference.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    inference.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    {"evaluator": bench_evaluator, "inference": bench_inference}[args.what](args)


if __name__ == "__main__":
    main()
