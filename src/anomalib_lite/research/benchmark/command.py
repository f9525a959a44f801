"""Print speed figures.

evaluator: the evaluator's metrics on synthetic maps (image AUROC, AP and F1-max, pixel AUROC, AUPRO, pixel AP,
pixel F1-max and its threshold, AUPIMO; ``--base``: only image AUROC, pixel AUROC and AUPRO), timed end to end
with peak memory; ``--kind`` picks the maps' distribution (:data:`KINDS`: ``realistic``, the default, smooth maps
like a model's; ``uniform``, ``float16``, ``exp``, ``levels256``, ``ties``, ``shifted``; ``all``: each in turn);
``--profile`` adds the time of each phase; ``--check`` compares with scikit-learn (``roc_auc_score``,
``average_precision_score``, F1 over ``precision_recall_curve``), a NumPy float64 implementation of the MVTec AD
reference AUPRO and a NumPy float64 AUPIMO (:func:`reference_aupimo`) on the same pixels.
    python scripts/benchmark.py evaluator [--maps 1725 --size 256] [--kind all] [--device cuda] \
        [--base] [--profile] [--check]
model: training and inference images/s of a model family at its paper resolution and batch
size (its ``<model>_mvtec`` experiment config on data=mvtec; random weights and images, so
nothing is downloaded), every training stage timed after warm-up, with peak memory; then the projected
wall time of the paper's full MVTec AD table at these rates: per stage, its epochs (or its steps' epochs) on
each category's training images, plus inference on the 1 725 test images.
    python scripts/benchmark.py model --model all [--steps 5] [--set data.batch_size=8]
inference: a trained checkpoint's ``predict`` per image, after warm-up, at its image size;
``--set`` replaces stored options (e.g. MSFI's weight search off, or another keep_k).
    python scripts/benchmark.py inference --ckpt outputs/.../last.pt [--set model.weight_search.apply=false]
export: per checkpoint, the time of export.py (ONNX and TorchScript, with its check against predict) and
inference ms per image of the ONNX file in onnxruntime and the TorchScript file beside predict's (CPU).
    python scripts/benchmark.py export --ckpt A/last.pt [B/last.pt ...] [--images 32 --batch 8]
peer: our HFR and MSFI against anomalib's Reverse Distillation and STFPM on the same images
(:mod:`.peer`; anomalib runs in the python given, e.g. a separate virtual environment).
    python scripts/benchmark.py peer --anomalib-python .venv-peer/bin/python [--size 128 --epochs 3] [--set ...]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.integrate import trapezoid

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.engine.measure import PeakRSS, reset_peak_memory, synchronize
from anomalib_lite.metrics import aupimo, auroc, average_precision, f1_max, pixel_metrics
from anomalib_lite.metrics.aupimo import FPR_BOUNDS
from anomalib_lite.metrics.profiling import record_phases
from anomalib_lite.research.benchmark import peer as peer_benchmark

# MVTec AD's training images per category (the dataset as published: 3 629 in all) and its test images.
MVTEC_TRAIN_IMAGES = {
    "bottle": 209,
    "cable": 224,
    "capsule": 219,
    "carpet": 280,
    "grid": 264,
    "hazelnut": 391,
    "leather": 245,
    "metal_nut": 220,
    "pill": 267,
    "screw": 320,
    "tile": 230,
    "toothbrush": 60,
    "transistor": 213,
    "wood": 247,
    "zipper": 240,
}
MVTEC_TEST_IMAGES = 1725


def table_images(epochs: int, steps: int | None, batch: int) -> int:
    """Training images one stage processes over the whole MVTec AD table: per category, the engine's epochs (a
    steps budget becomes ``ceil(steps / batches per epoch)`` epochs) times the images of its full batches (the
    loader drops a last partial batch)."""
    total = 0
    for count in MVTEC_TRAIN_IMAGES.values():
        batches = count // batch if count > batch else 1
        category_epochs = epochs if steps is None else -(-steps // batches)
        total += category_epochs * batches * min(batch, count)
    return total


def rectangle_masks(n: int, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Masks ``n×size×size`` with 1–3 rectangles (sides 1/16 to 1/4 of the image) on every other image, and
    the image labels (1 where a mask has a rectangle)."""
    masks = np.zeros((n, size, size), dtype=bool)
    labels = np.arange(n) % 2
    for i in np.flatnonzero(labels):
        for _ in range(rng.integers(1, 4)):
            h, w = rng.integers(max(1, size // 16), max(2, size // 4), 2)
            y, x = rng.integers(0, size - h), rng.integers(0, size - w)
            masks[i, y : y + h, x : x + w] = True
    return masks, labels


def realistic_case(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Maps shaped like a model's: noise at 1/8 resolution upsampled bilinearly (smooth, nearly every value
    distinct), plus a smooth bump that rises a little outside each anomalous blob; the blobs are the masks."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 2, size // 8, size // 8, generator=generator)
    background, blob = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False).unbind(1)
    labels = torch.arange(n) % 2
    masks = (blob > 0.85) & labels[:, None, None].bool()
    maps = 0.5 * background + 4 * (blob - 0.8).clamp(min=0) * labels[:, None, None]
    return maps.numpy(), masks.numpy()


def uniform_case(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """i.i.d. uniform float32 maps in [0, 1) (every value distinct, anomalous pixels drawn like normal ones) and
    rectangle masks (:func:`rectangle_masks`)."""
    rng = np.random.default_rng(seed)
    masks = rectangle_masks(n, size, rng)[0]
    return rng.random((n, size, size), dtype=np.float32), masks


def from_uniform(transform: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable:
    """A case: :func:`uniform_case`'s maps through ``transform(maps, masks)``, the same masks."""

    def case(n: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        maps, masks = uniform_case(n, size, seed)
        return transform(maps, masks), masks

    return case


# The map distributions of ``evaluator --kind``: i.i.d. uniform float32 (every value distinct), rounded to
# float16, exp-scaled (a wide range), quantised to 256 levels, heavy ties (16 levels), uniform raised by 0.5
# inside the defects, and the realistic smooth maps. Each: ``(n, size, seed)`` → float32 maps ``n×size×size``
# and bool masks.
KINDS = {
    "uniform": uniform_case,
    "float16": from_uniform(lambda maps, masks: maps.astype(np.float16).astype(np.float32)),
    "exp": from_uniform(lambda maps, masks: np.exp(10 * maps)),
    "levels256": from_uniform(lambda maps, masks: np.floor(maps * 256) / 256),
    "ties": from_uniform(lambda maps, masks: np.floor(maps * 16) / 16),
    "shifted": from_uniform(lambda maps, masks: maps + 0.5 * masks),
    "realistic": realistic_case,
}


def evaluator_case(kind: str, n: int, size: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Maps and masks of ``kind`` (:data:`KINDS`), with image scores (each map's maximum) and labels."""
    maps, masks = KINDS[kind](n, size, seed)
    maps = np.ascontiguousarray(maps, dtype=np.float32)
    labels = masks.reshape(n, -1).any(1).astype(np.int64)
    scores = maps.reshape(n, -1).max(1)
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in (maps, masks, scores, labels))


def reference_aupro(maps: np.ndarray, masks: np.ndarray, fpr_limit: float = 0.3) -> float:
    """The MVTec AD reference algorithm, vectorised in NumPy/float64: one argsort of every pixel,
    a curve point at each distinct score, trapezoids up to ``fpr_limit``."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = True  # 8-connected regions, never across images
    regions, n_regions = ndimage.label(masks, structure=structure)
    regions = regions.ravel()
    sizes = np.bincount(regions, minlength=n_regions + 1).astype(np.float64)
    scores = maps.ravel()
    order = np.argsort(-scores, kind="stable")
    sorted_scores, region = scores[order], regions[order]
    del order
    weight = np.where(region > 0, 1.0 / (sizes[region] * n_regions), 0.0)
    fpr = np.cumsum(region == 0, dtype=np.float64) / np.count_nonzero(regions == 0)
    pro = np.cumsum(weight)
    last = np.append(sorted_scores[1:] != sorted_scores[:-1], True)
    fpr, pro = np.append(0.0, fpr[last]), np.append(0.0, pro[last])
    inside = int(np.searchsorted(fpr, fpr_limit, side="right"))
    area = float(np.sum(np.diff(fpr[:inside]) * (pro[1:inside] + pro[: inside - 1]) / 2))
    if inside < len(fpr) and fpr[inside - 1] < fpr_limit:
        at_limit = np.interp(fpr_limit, fpr[inside - 1 : inside + 1], pro[inside - 1 : inside + 1])
        area += (fpr_limit - fpr[inside - 1]) * (pro[inside - 1] + at_limit) / 2
    return float(area / fpr_limit)


def reference_f1_max(labels: np.ndarray, scores: np.ndarray) -> tuple[float, float]:
    """F1 at every threshold of scikit-learn's ``precision_recall_curve``: the best, and the highest threshold
    within 1e-12 of it."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(labels, scores)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-300), 0.0)
    best = float(f1.max())
    return best, float(thresholds[f1 >= best - 1e-12].max())


def reference_aupimo(
    maps: np.ndarray, masks: np.ndarray, bounds: tuple[float, float] = FPR_BOUNDS, points: int = 200_001
) -> np.ndarray:
    """AUPIMO of each anomalous image in NumPy float64, by quadrature: the normal images' (empty masks) pixels
    sorted once; at each of ``points`` shared FPRs ``z`` spaced evenly on the log axis over the bounds, the
    normal score ``w`` whose tie group spans ``z`` (the ``ceil(z·N)``-th highest), and each image's TPR
    interpolated linearly in FPR between the thresholds just above ``w`` and at ``w`` (binary searches in the
    image's sorted anomalous scores); the trapezoid rule on the log axis, divided by ``log(U / L)``.

    Returns:
        The AUPIMO of the images with an anomalous pixel, in image order.
    """
    low, high = bounds
    has_mask = masks.reshape(len(masks), -1).any(1)
    normal = np.sort(maps[~has_mask].ravel()).astype(np.float64)
    n = normal.size
    log_z = np.linspace(np.log(low), np.log(high), points)
    z = np.exp(log_z)
    rank = np.clip(np.ceil(z * n).astype(np.int64), 1, n)  # the rank from the top of the normal score at z
    w = normal[n - rank]
    fpr_at = (n - np.searchsorted(normal, w, "left")) / n
    fpr_above = (n - np.searchsorted(normal, w, "right")) / n
    share = (z - fpr_above) / (fpr_at - fpr_above)
    values = []
    for image in np.flatnonzero(has_mask):
        positives = np.sort(maps[image][masks[image]]).astype(np.float64)
        tpr_at = 1 - np.searchsorted(positives, w, "left") / positives.size
        tpr_above = 1 - np.searchsorted(positives, w, "right") / positives.size
        tpr = tpr_above + (tpr_at - tpr_above) * share
        values.append(trapezoid(tpr, log_z) / np.log(high / low))
    return np.array(values)


def full_sort_seconds(maps: torch.Tensor) -> float:
    """Wall time of one sort of all of ``maps``' values (NumPy on CPU, torch on a GPU): a yardstick of the machine's
    speed, so that the evaluator's times from different machines can be compared."""
    if maps.device.type == "cpu":
        values = maps.numpy().ravel()
        start = time.perf_counter()
        np.sort(values)
        return time.perf_counter() - start
    values = maps.flatten()
    synchronize(maps.device)
    start = time.perf_counter()
    torch.sort(values)
    synchronize(maps.device)
    return time.perf_counter() - start


def bench_evaluator(args: argparse.Namespace) -> None:
    for kind in KINDS if args.kind == "all" else [args.kind]:
        bench_evaluator_kind(kind, args)


def bench_evaluator_kind(kind: str, args: argparse.Namespace) -> None:
    """Time (and with ``--check`` verify) the metrics on maps of ``kind`` (``args.base``: the first three only)."""
    device = torch.device(args.device)
    maps, masks, scores, labels = (t.to(device) for t in evaluator_case(kind, args.maps, args.size))
    pixels = maps.numel()
    print(
        f"evaluator: {args.maps} {kind} maps of {args.size}×{args.size} ({pixels / 1e6:.1f} M pixels, "
        f"{int(masks.sum()) / pixels:.1%} anomalous) on {device}"
    )
    reset_peak_memory(device)
    times = []
    with PeakRSS() as host:
        for _ in range(args.repeat):  # the phases shown are the last run's
            with record_phases() if args.profile else nullcontext() as phases:
                start = time.perf_counter()
                image = auroc(scores, labels)
                pixel = pixel_metrics(maps, masks, precision_recall=not args.base)
                if not args.base:
                    image_ap, (image_f1, _) = average_precision(scores, labels), f1_max(scores, labels)
                    per_image = aupimo(maps, masks)
                synchronize(device)
                times.append(time.perf_counter() - start)
    print(f"  image AUROC {image:.6f}  pixel AUROC {pixel.pixel_auroc:.6f}  AUPRO {pixel.aupro:.6f}")
    if not args.base:
        print(
            f"  image AP {image_ap:.6f}  image F1-max {image_f1:.6f}  pixel AP {pixel.pixel_ap:.6f}  "
            f"pixel F1-max {pixel.pixel_f1_max:.6f} at {pixel.pixel_threshold:.6g}  "
            f"AUPIMO {per_image.mean:.6f} ({per_image.values.numel()} images)"
        )
    what = "image AUROC, pixel AUROC, AUPRO" if args.base else "all ten metrics"
    later = f"; then {', '.join(f'{t:.2f}' for t in times[1:])} s" if len(times) > 1 else ""
    print(f"  wall time {times[0]:.2f} s first ({what}){later}")
    sort_seconds = full_sort_seconds(maps)
    print(
        f"  this machine's yardstick: one sort of all {pixels / 1e6:.1f} M values takes {sort_seconds:.2f} s "
        f"({'NumPy' if device.type == 'cpu' else 'torch'}); the metrics took {min(times) / sort_seconds:.2f}× that"
    )
    if phases is not None:
        for name, phase_seconds in phases.items():
            print(f"    {name:<32} {phase_seconds:6.3f} s")
    if device.type == "cuda":
        print(f"  {_peak(device, host)}")
    print(f"  peak host memory growth {host.growth_gib:.2f} GiB")
    if args.check:
        from sklearn.metrics import average_precision_score, roc_auc_score

        maps_np, masks_np = maps.cpu().numpy(), masks.cpu().numpy()
        labels_np, scores_np = labels.cpu().numpy(), scores.cpu().numpy()
        checks = [
            ("scikit-learn pixel AUROC", lambda: roc_auc_score(masks_np.ravel(), maps_np.ravel()), pixel.pixel_auroc),
            ("scikit-learn image AUROC", lambda: roc_auc_score(labels_np, scores_np), image),
            (
                "reference AUPRO (MVTec algorithm, NumPy float64)",
                lambda: reference_aupro(maps_np, masks_np),
                pixel.aupro,
            ),
        ]
        if not args.base:
            flat_masks, flat_maps = masks_np.ravel(), maps_np.ravel()
            # One PR curve for the value and its threshold (timed with the value).
            reference_pixel_f1 = functools.cache(lambda: reference_f1_max(flat_masks, flat_maps))
            checks += [
                ("scikit-learn image AP", lambda: average_precision_score(labels_np, scores_np), image_ap),
                ("scikit-learn pixel AP", lambda: average_precision_score(flat_masks, flat_maps), pixel.pixel_ap),
                ("pixel F1-max over scikit-learn's PR curve", lambda: reference_pixel_f1()[0], pixel.pixel_f1_max),
                ("its threshold", lambda: reference_pixel_f1()[1], pixel.pixel_threshold),
                (
                    "reference AUPIMO (NumPy float64 quadrature), largest per-image",
                    lambda: reference_aupimo(maps_np, masks_np),
                    per_image.values.cpu().numpy(),
                ),
            ]
        for name, reference, ours in checks:
            start = time.perf_counter()
            value = reference()
            difference = float(np.max(np.abs(np.asarray(value) - np.asarray(ours))))
            shown = f"{value:.10f} " if np.ndim(value) == 0 else ""
            print(f"  {name} {shown}in {time.perf_counter() - start:.2f} s; |difference| {difference:.2e}")


def _peak(device: torch.device, host: PeakRSS) -> str:
    if device.type == "cuda":
        return f"peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB"
    return f"peak RSS {host.peak / 2**30:.2f} GiB"


def bench_model(args: argparse.Namespace) -> None:
    import dataclasses

    from hydra import compose, initialize_config_dir

    from anomalib_lite.data import DataModule, ImageSet
    from anomalib_lite.engine.device import channels_last_used, mixed_precision, place_model, to_device
    from anomalib_lite.models import build_model
    from anomalib_lite.pipeline.config import validate

    device = torch.device(args.device)
    for name in ["hfr", "msfi", "igd", "utad"] if args.model == "all" else [args.model]:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[f"+experiment={name}_mvtec", "data=mvtec", *args.set])
        run = validate(cfg)
        layout = channels_last_used(run.trainer.channels_last, device)
        model = build_model(run.model, dataclasses.replace(run.backbone, weights="none"))
        place_model(model, device, run.trainer.channels_last)
        size, batch = run.data.image_size, run.data.batch_size
        count = batch * (args.warmup + args.steps)
        rng = np.random.default_rng(0)
        images = ImageSet.from_arrays(
            rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
            [0] * count,
            [f"random_{i}.png" for i in range(count)],
        )
        datamodule = DataModule(images, images, batch)
        print(
            f"{name}: backbone {run.backbone.name}, {size}×{size}, batch {batch}, on {device}, "
            f"precision {args.precision}, channels-last {layout}"
        )
        projected = 0.0
        for stage in model.stages():
            if stage.split != "train":
                print(f"  stage {stage.name}: trains on held-out test images, not timed")
                continue
            if stage.on_stage_start:
                stage.on_stage_start(datamodule)
            optimizer = stage.optimizer(stage.parameters)
            model.train()
            reset_peak_memory(device)
            with PeakRSS() as host:
                for i, item in enumerate(datamodule.train_loader()):
                    if i == args.warmup:
                        synchronize(device)
                        start = time.perf_counter()
                    optimizer.zero_grad(set_to_none=True)
                    with mixed_precision(args.precision, device):
                        loss = stage.step(to_device(item, device, layout))["loss"]
                    if not stage.backward_in_step:
                        loss.backward()
                    optimizer.step()
                synchronize(device)
                rate = args.steps * batch / (time.perf_counter() - start)
            seconds = table_images(stage.epochs, stage.steps, batch) / rate
            projected += seconds
            budget = f"{stage.steps} steps" if stage.steps is not None else f"{stage.epochs} epochs"
            print(
                f"  train {stage.name}: {rate:.3g} images/s, {_peak(device, host)}; "
                f"full MVTec AD table ({budget}): {seconds / 3600:.2f} h",
                flush=True,
            )
        model.eval()
        test = to_device({"image": torch.stack([images[i]["image"] for i in range(batch)])}, device, layout)["image"]
        reset_peak_memory(device)
        with PeakRSS() as host, mixed_precision(args.precision, device):
            for i in range(args.warmup + args.steps):
                if i == args.warmup:
                    synchronize(device)
                    start = time.perf_counter()
                model.predict(test)
            synchronize(device)
            rate = args.steps * batch / (time.perf_counter() - start)
        projected += MVTEC_TEST_IMAGES / rate
        print(f"  inference: {rate:.3g} images/s, {_peak(device, host)}", flush=True)
        print(f"  projected full MVTec AD table (15 categories, every stage, inference): {projected / 3600:.2f} h")
        del model, optimizer


def bench_inference(args: argparse.Namespace) -> None:
    from omegaconf import OmegaConf

    from anomalib_lite.pipeline.inference import load_trained

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
    print(
        f"  {batches * args.batch} images of {size}×{size} in batches of {args.batch} on {device}: "
        f"{1000 * seconds / (batches * args.batch):.1f} ms per image"
    )


def _ms_per_image(score, batch: np.ndarray, images: int, warmup: int) -> float:
    """Mean wall time per image (ms) of ``score(batch)`` over ``images`` images, after ``warmup`` calls."""
    for _ in range(warmup):
        score(batch)
    calls = max(1, images // len(batch))
    start = time.perf_counter()
    for _ in range(calls):
        score(batch)
    return 1000 * (time.perf_counter() - start) / (calls * len(batch))


def bench_export(args: argparse.Namespace) -> None:
    import tempfile

    from anomalib_lite.pipeline.deploy import export_model, load_exported, metadata, trained_on_grey
    from anomalib_lite.pipeline.inference import checkpoint_scorer, exported_scorer, load_trained

    for ckpt in args.ckpt:
        run, model = load_trained(Path(ckpt))
        model.eval()
        size, channels = run.data.image_size, 1 if trained_on_grey(run) else 3
        pixels = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        # As predict.py scores a batch read from files: a checkpoint's predict, or an exported file.
        scorer = checkpoint_scorer(model, channels, torch.device("cpu"))
        figures = {"predict": _ms_per_image(scorer, pixels, args.images, args.warmup)}
        line = []
        with tempfile.TemporaryDirectory() as folder:
            for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
                path = Path(folder) / name
                start = time.perf_counter()
                export_model(model, run, fmt, path, metadata(run, fmt, None, "benchmark", Path(ckpt)))
                line.append(f"export {fmt} {time.perf_counter() - start:.1f} s (with its check)")
                scorer = exported_scorer(load_exported(path))
                figures[fmt] = _ms_per_image(scorer, pixels, args.images, args.warmup)
        print(f"{run.model.name} {size}×{size} ({ckpt}): " + ", ".join(line))
        print(
            f"  ms per image, batches of {args.batch}, {torch.get_num_threads()} torch threads: "
            + ", ".join(f"{k} {v:.1f}" for k, v in figures.items()),
            flush=True,
        )


def main(argv: list[str] | None = None) -> int:
    """``anomalib-lite benchmark`` (see ``--help``); returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    evaluator = sub.add_parser("evaluator", help="time the exact metrics")
    evaluator.add_argument("--maps", type=int, default=1725, help="number of maps (default: MVTec AD's test set)")
    evaluator.add_argument("--size", type=int, default=256, help="map side in pixels")
    evaluator.add_argument("--kind", default="realistic", choices=[*KINDS, "all"], help="map distribution (all: each)")
    evaluator.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    evaluator.add_argument("--profile", action="store_true", help="print the time of each phase (of the last run)")
    evaluator.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs on the same maps; the first in a process also pays for its fresh memory pages (default: 3)",
    )
    evaluator.add_argument("--base", action="store_true", help="only image AUROC, pixel AUROC and AUPRO")
    evaluator.add_argument(
        "--check", action="store_true", help="compare with scikit-learn and the reference AUPRO and AUPIMO"
    )
    model = sub.add_parser("model", help="time training and inference of a model family at paper size")
    model.add_argument("--model", default="all", choices=["all", "hfr", "msfi", "igd", "utad"])
    model.add_argument("--steps", type=int, default=5, help="timed batches per stage (after warm-up)")
    model.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    model.add_argument("--set", nargs="*", default=[], help="Hydra overrides, e.g. data.batch_size=8")
    model.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16"],
        help="auto: bf16 autocast on CUDA (as the engine), fp32 on CPU",
    )
    model.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    inference = sub.add_parser("inference", help="time a trained model's predict")
    inference.add_argument("--ckpt", required=True, help="a checkpoint written by train.py")
    inference.add_argument("--set", nargs="*", default=[], help="stored options to replace, key=value")
    inference.add_argument("--images", type=int, default=64, help="images to time (after warm-up)")
    inference.add_argument("--batch", type=int, default=8)
    inference.add_argument("--warmup", type=int, default=2, help="untimed batches first")
    inference.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    export = sub.add_parser("export", help="time export.py and the exported files' inference beside predict")
    export.add_argument("--ckpt", nargs="+", required=True, help="checkpoints written by train.py")
    export.add_argument("--images", type=int, default=32, help="images to time (after warm-up)")
    export.add_argument("--batch", type=int, default=8)
    export.add_argument(
        "--warmup", type=int, default=3, help="untimed batches first (TorchScript optimises over the first calls)"
    )
    peer_benchmark.add_parser(sub)
    args = parser.parse_args(argv)
    runs = {"evaluator": bench_evaluator, "model": bench_model, "inference": bench_inference, "export": bench_export}
    runs["peer"] = peer_benchmark.run
    runs[args.what](args)
    return 0
