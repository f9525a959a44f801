"""Sizes far beyond the data or the machine: clamped or refused before anything is allocated, with the estimate."""

from __future__ import annotations

import contextlib
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from anomalib_lite.data import DataConfig, DataModule, ImageRecord, build_datamodule
from anomalib_lite.data import datamodule as datamodule_module
from anomalib_lite.data.one_class import Mnist5kConfig, one_class_datamodule, resize_images
from anomalib_lite.engine.feature_cache import build_feature_cache
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.base import Stage

from conftest import tiny_datamodule


def test_a_batch_size_above_the_training_set_is_clamped_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="anomalib_lite.data.datamodule"):
        dm = tiny_datamodule(n=10, batch_size=100_000)
    assert dm.batch_size == 10
    assert "data.batch_size=100000 is above the 10 training images: batches of 10" in caplog.text
    assert [len(b["index"]) for b in dm.train_loader()] == [10]  # what the loader gave before: the whole set
    assert [len(b["index"]) for b in dm.test_loader()] == [2]
    assert tiny_datamodule(n=10, batch_size=4).batch_size == 4  # at or below the set's size: as given


def test_the_feature_cache_fills_in_batches_of_the_training_batch_never_padded_beyond_the_set():
    """The cache used to pad every batch to ``batch_size``: 100 000 copies of 60 images (18.8 GB)."""
    dataset = tiny_datamodule(n=10).train_set
    seen = []

    def features(images: torch.Tensor) -> dict[str, torch.Tensor]:
        seen.append(images.shape[0])
        return {"mean": images.mean(dim=(2, 3))}

    stage = Stage("s", 1, [], lambda p: None, lambda b: {}, features=features)
    cache = build_feature_cache(stage, dataset, 5000, torch.device("cpu"), contextlib.nullcontext, "on")
    assert seen == [1, 10]  # the probe, then one batch of the whole set (the loader's training batch)
    expected = torch.stack([dataset[i]["image"].mean(dim=(1, 2)) for i in range(10)])
    torch.testing.assert_close(cache.tensors["mean"], expected)
    seen.clear()
    build_feature_cache(stage, dataset, 4, torch.device("cpu"), contextlib.nullcontext, "on")
    assert seen == [1, 4, 4, 4]  # 4 + 4 + 2 padded to the training batch of 4, as before


def _records(tmp_path, n: int) -> list[ImageRecord]:
    return [ImageRecord(tmp_path / f"{i}.png", 0) for i in range(n)]


def test_decoded_images_that_would_not_fit_are_refused_before_any_is_read(tmp_path, monkeypatch):
    monkeypatch.setattr(datamodule_module, "available_host_bytes", lambda: 10**6)
    read = []
    monkeypatch.setattr(datamodule_module, "read_image", lambda path, size: read.append(path))
    monkeypatch.setattr(np, "empty", lambda *a, **k: pytest.fail("allocated before the check"))
    need = 6 * 256 * 256 * (3 + 1)  # 3 + 3 images of 256×256×3 uint8, each with a 256×256 bool mask
    message = r"^data.image_size=256: the 6 decoded images of t \(256×256×3 bytes each, with a mask\) would take "
    with pytest.raises(ConfigError, match=message + rf"{need / 1e9:.2f} GB, more than the 0.00 GB .*available"):
        DataModule.from_records(_records(tmp_path, 3), _records(tmp_path, 3), 256, 4, name="t")
    assert read == []


def test_the_issues_sizes_are_refused_before_any_work(tmp_path, mvtec_root, monkeypatch):
    # The issue's data.image_size=100000: 40 GB an image; its 60 images would take 2.4 TB (on any machine).
    with pytest.raises(ConfigError, match=r"the 60 decoded images .* would take 2400.00 GB"):
        DataModule.from_records(_records(tmp_path, 50), _records(tmp_path, 10), 100_000, 16, name="t")
    # Through a dataset, on a machine with 1 GB available: 12 images of 1.6 GB (20000 px).
    monkeypatch.setattr(datamodule_module, "available_host_bytes", lambda: 10**9)
    with pytest.raises(ConfigError, match="data.image_size=20000: the 12 decoded images of mvtec/widget .* 19.20 GB"):
        build_datamodule(DataConfig(root=str(mvtec_root), category="widget", image_size=20_000), "widget")
    # One image beyond the machine's whole memory is refused with the config.
    with pytest.raises(ValueError, match=r"data.image_size=1000000: one decoded image takes 4000.0 GB"):
        DataConfig(image_size=1_000_000)


def test_one_class_images_are_checked_before_they_are_resized():
    images = np.zeros((30, 28, 28), np.uint8)
    labels = np.arange(30) % 10
    splits = (images, labels, images[:20], labels[:20])
    cfg = Mnist5kConfig(normal_class=3)
    with pytest.raises(ConfigError, match=r"the 23 decoded images of mnist5k/3 \(100000×100000×3 bytes"):
        one_class_datamodule("mnist5k", splits, cfg.normal_class, 100_000, True, 8)
    dm = one_class_datamodule("mnist5k", splits, cfg.normal_class, 32, False, 8)
    assert dm.train_set.images.shape == (3, 32, 32, 1) and dm.batch_size == 3


@pytest.mark.parametrize("grey_to_rgb", [False, True])
@pytest.mark.parametrize("shape", [(7, 28, 28), (7, 32, 32, 3)])
def test_resizing_in_chunks_equals_resizing_all_at_once(shape, grey_to_rgb):
    images = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    x = torch.from_numpy(images)
    x = (x[..., None] if x.ndim == 3 else x).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    x = x.expand(-1, 3, -1, -1) if grey_to_rgb else x
    reference = x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()  # all at once, as before
    for chunk in (1, 3, 256):
        assert np.array_equal(resize_images(images, 48, grey_to_rgb, chunk=chunk), reference)
