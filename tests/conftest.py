"""Shared fixtures: tiny datasets made on the fly, and a runner for the entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_lite.data import DataModule, ImageSet

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# A run small enough for a test: 64 px images, few of them, one epoch.
TINY = [
    "data.image_size=64", "data.batch_size=4", "data.n_train=8", "data.n_test_good=4",
    "data.n_per_defect=2", "data.source_size=64", "trainer.max_epochs=1", "trainer.progress=false",
    "eval.n_maps=2",
]  # fmt: skip


def run_entry(script: str, *overrides: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides>`` from the repository; capture its output."""
    return subprocess.run(
        [sys.executable, str(REPO / script), *overrides],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def tiny_datamodule(n: int = 10, size: int = 32, batch_size: int = 4) -> DataModule:
    """``n`` random-noise ``size``-px training images (all normal), the first two also as the test set."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    names = [f"good/{i}.png" for i in range(n)]
    return DataModule(ImageSet.from_arrays(images, [0] * n, names), ImageSet.from_arrays(images[:2], [0, 0], names[:2]),
                      batch_size, name="tiny")  # fmt: skip


def write_mvtec_category(root: Path, category: str, rng: np.random.Generator, mask_for_all: bool = True) -> None:
    """A tiny MVTec-layout category: flat grey textures; defects are bright squares with masks.

    The last defect image gets no mask file unless ``mask_for_all``.
    """

    def normal() -> np.ndarray:
        return (120 + rng.normal(0, 10, (48, 48, 3))).clip(0, 255).astype(np.uint8)

    for i in range(6):
        Image.fromarray(normal()).save(root / category / "train" / "good" / f"{i:03d}.png")
    for i in range(3):
        Image.fromarray(normal()).save(root / category / "test" / "good" / f"{i:03d}.png")
    for i in range(3):
        image, mask = normal(), np.zeros((48, 48), np.uint8)
        y, x = rng.integers(4, 30, 2)
        image[y : y + 12, x : x + 12] = 250
        mask[y : y + 12, x : x + 12] = 255
        Image.fromarray(image).save(root / category / "test" / "spot" / f"{i:03d}.png")
        if mask_for_all or i < 2:
            Image.fromarray(mask).save(root / category / "ground_truth" / "spot" / f"{i:03d}_mask.png")


@pytest.fixture
def mvtec_root(tmp_path: Path) -> Path:
    """An MVTec-layout dataset with one category, ``widget``, whose last defect has no mask."""
    root = tmp_path / "mvtec"
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(0), mask_for_all=False)
    return root


def random_case(seed: int, n: int = 4, size: int = 12, levels: int | None = None):
    """``n`` score maps ``size×size`` (float32) with raised rectangles where the masks are (none in image 0).

    ``levels``: quantise the maps to that many levels per unit, to force many ties.
    """
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(1, n):
        for _ in range(rng.integers(1, 3)):
            y, x = rng.integers(0, size - 3, 2)
            h, w = rng.integers(1, 5, 2)
            masks[i, y : y + h, x : x + w] = True
    maps = rng.random((n, size, size)) + masks * rng.random() * 1.5
    if levels is not None:  # quantise to force many ties
        maps = np.round(maps * levels) / levels
    return maps.astype(np.float32), masks


@pytest.fixture(params=["sorting", "counting"])
def rank_path(request, monkeypatch):
    """Run a test once with the negatives sorted and once counted by keys (small windows: several passes)."""
    from anomalib_lite.metrics import ranks

    if request.param == "counting":
        monkeypatch.setattr(ranks, "SORT_BELOW", 0)
        monkeypatch.setattr(ranks, "WINDOW_BUCKETS", 2)
    return request.param


def per_position(a, b, distance):
    """Naive reference: ``distance(u, v)`` of the channel vectors at every position of two ``B×C×H×W``
    tensors, one position at a time → ``B×H×W``."""
    out = torch.zeros(a.shape[0], *a.shape[2:])
    for n in range(a.shape[0]):
        for y in range(a.shape[2]):
            for x in range(a.shape[3]):
                out[n, y, x] = distance(a[n, :, y, x], b[n, :, y, x])
    return out
