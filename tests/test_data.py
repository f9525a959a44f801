"""The data layer: odd images, broken files, layouts, the synthetic generator, the batch contract."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.morphology import dilation, disk

from anomalib_lite.data import DataConfig, DataModule, ImageRecord, build_datamodule, categories, synthetic
from anomalib_lite.data.folder import FolderConfig
from anomalib_lite.data.images import read_image, read_mask
from anomalib_lite.data.mvtec import MVTEC_CATEGORIES, mvtec_records
from anomalib_lite.data.synthetic import DEFECTS, SYNTHETIC_CATEGORIES, SyntheticConfig, ensure_synthetic
from anomalib_lite.errors import ConfigError, DataError


@pytest.mark.parametrize(
    "array",
    [
        np.full((20, 30), 200, np.uint8),  # grey
        np.dstack([np.full((20, 30, 3), 200, np.uint8), np.zeros((20, 30), np.uint8)]),  # RGBA
        np.full((20, 30), 200 * 257, np.uint16),  # 16-bit grey
    ],
)
def test_grey_rgba_and_16bit_images_become_rgb(tmp_path, array):
    path = tmp_path / "x.png"
    Image.fromarray(array).save(path)
    image = read_image(path, 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert abs(int(image.mean()) - 200) <= 1  # 16-bit scaled by its depth, alpha dropped, grey repeated


def test_truncated_image_is_reported_by_path(tmp_path):
    good = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    path = tmp_path / "broken.png"
    Image.fromarray(good).save(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="broken.png"):
        read_image(path, 32)
    records = [ImageRecord(path, 0)]
    with pytest.raises(DataError, match=r"broken\.png[\s\S]*skip_unreadable"):
        DataModule.from_records(records, records, 32, 2, name="t")


def test_mask_of_another_size_is_resized_and_binarised(tmp_path):
    mask = np.zeros((10, 10), np.uint8)
    mask[:5] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", 20)
    assert out.shape == (20, 20) and out.dtype == bool
    assert out[:10].all() and not out[10:].any()


def test_mvtec_layout_records_and_missing_masks(mvtec_root):
    train, test = mvtec_records(mvtec_root, "widget")
    assert len(train) == 6 and all(r.label == 0 for r in train)
    assert sorted(r.label for r in test) == [0, 0, 0, 1, 1, 1]
    assert [r.mask_path is not None for r in test if r.label == 1] == [True, True, False]
    dm = DataModule.from_records(train, test, 32, 4, name="widget")
    batch = next(iter(dm.test_loader()))
    assert batch["image"].shape == (4, 3, 32, 32) and batch["mask"].shape == (4, 1, 32, 32)
    assert batch["label"].dtype == torch.long and len(batch["path"]) == 4
    assert dm.test_set.mask_valid.tolist() == [True, True, True, True, True, False]
    assert dm.has_masks


def test_wrong_category_names_the_choices(mvtec_root):
    with pytest.raises(ConfigError, match="choices: widget"):
        categories(DataConfig(root=str(mvtec_root), category="nope"))


@pytest.mark.parametrize("category", ["screw", "mything"])
def test_a_missing_data_root_says_no_such_folder_for_any_category(tmp_path, category):
    """A moved or missing root is the problem whatever the category: MVTec AD's names are no choices
    for a dataset of one's own in this layout."""
    absent = tmp_path / "absent"
    with pytest.raises(DataError) as missing:
        categories(DataConfig(root=str(absent), category=category))
    first, *rest = str(missing.value).splitlines()
    looked = absent / category / "train" / "good"
    assert first == f"Dataset not found: looked for {looked}, but data.root={absent} is no such folder"
    assert "<root>/<category>/train/good" in rest[1] and "download" in rest[-1]
    assert MVTEC_CATEGORIES[1] not in str(missing.value)
    absent.mkdir()  # there, but holding no category: the folder the category needs is named
    with pytest.raises(DataError, match=rf"^Dataset not found: looked for .*{category}.train.good\n"):
        categories(DataConfig(root=str(absent), category=category))


def test_synthetic_is_deterministic_with_masks_where_pixels_changed(tmp_path):
    args = dict(seed=3, n_train=2, n_test_good=1, n_per_defect=2, size=64)
    ensure_synthetic(tmp_path / "a", **args)
    ensure_synthetic(tmp_path / "b", **args)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == len(SYNTHETIC_CATEGORIES) * (2 + 1 + 4 * 2 * 2)
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    for mask_path in (tmp_path / "a").rglob("*_mask.png"):
        mask = np.asarray(Image.open(mask_path)) > 127
        assert 0 < mask.mean() < 0.5, mask_path  # a defect of some size, never the whole image


def test_synthetic_datamodule_and_unknown_category(tmp_path):
    cfg = SyntheticConfig(
        root=str(tmp_path), category="all", n_train=2, n_test_good=1, n_per_defect=1, source_size=64, image_size=32
    )
    assert categories(cfg) == SYNTHETIC_CATEGORIES
    dm = build_datamodule(cfg, "brick")
    assert len(dm.train_set) == 2 and len(dm.test_set) == 5
    with pytest.raises(ConfigError, match="choices: brick, grass"):
        categories(SyntheticConfig(root=str(tmp_path), category="nope"))


def _defect_area_and_contrast(folder, defect: str) -> tuple[float, float]:
    """Mean share of the image a ``defect`` covers, and mean contrast: the largest per-channel difference
    between the mean colour inside its mask and in a 3-pixel ring around it (over every category)."""
    areas, contrasts = [], []
    for category in SYNTHETIC_CATEGORIES:
        for mask_path in sorted((folder / category / "ground_truth" / defect).glob("*_mask.png")):
            mask = np.asarray(Image.open(mask_path)) > 127
            image = np.asarray(Image.open(folder / category / "test" / defect / mask_path.name.replace("_mask", "")))
            ring = dilation(mask, disk(3)) & ~mask
            areas.append(mask.mean())
            contrasts.append(np.abs(image[mask].mean(0) - image[ring].mean(0)).max())
    return float(np.mean(areas)), float(np.mean(contrasts))


def test_hard_synthetic_defects_are_smaller_and_fainter_and_kept_apart(tmp_path):
    args = dict(seed=3, n_train=1, n_test_good=1, n_per_defect=3, size=96)
    easy = ensure_synthetic(tmp_path, **args)
    easy_files = _category_files(easy / "grass")
    hard = ensure_synthetic(tmp_path, **args, difficulty="hard")
    assert easy == tmp_path and hard == tmp_path / "hard"
    assert _category_files(easy / "grass") == easy_files  # the easy set is untouched...
    assert ensure_synthetic(tmp_path, **args) == easy and _category_files(easy / "grass") == easy_files  # ...and kept
    assert json.loads((hard / "grass" / "generation.json").read_text())["difficulty"] == "hard"
    for defect in DEFECTS:
        easy_area, easy_contrast = _defect_area_and_contrast(easy, defect)
        hard_area, hard_contrast = _defect_area_and_contrast(hard, defect)
        assert 0 < hard_area < 0.6 * easy_area, defect
        assert hard_contrast < 0.6 * easy_contrast, defect
    cfg = SyntheticConfig(
        root=str(tmp_path),
        category="grass",
        n_train=1,
        n_test_good=1,
        n_per_defect=3,
        source_size=96,
        image_size=32,
        difficulty="hard",
    )
    assert all(str(hard) in str(record.path) for record in build_datamodule(cfg, "grass").test_set.records)
    with pytest.raises(ValueError, match=r"data\.difficulty='medium' is unknown; choices: easy, hard"):
        SyntheticConfig(difficulty="medium")


def test_folder_dataset_holds_out_normals_and_matches_masks(tmp_path):
    rng = np.random.default_rng(0)
    for sub in ("ok", "ng", "masks"):
        (tmp_path / sub).mkdir()
    for i in range(10):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "ok" / f"{i}.png")
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "ng" / f"d{i}.png")
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "masks" / "d0_mask.png")
    cfg = FolderConfig(root=str(tmp_path), normal_dir="ok", abnormal_dir="ng", mask_dir="masks", image_size=32)
    dm = build_datamodule(cfg, "folder")
    train = {r.path.name for r in dm.train_set.records}
    test_normal = {r.path.name for r in dm.test_set.records if r.label == 0}
    assert len(train) == 8 and len(test_normal) == 2 and not train & test_normal
    assert [r.mask_path is not None for r in dm.test_set.records if r.label == 1] == [True, False]
    assert dm.test_set.masks[-2].all() and dm.has_masks
    with pytest.raises(DataError, match="data.abnormal_dir: folder .*missing does not exist"):
        build_datamodule(FolderConfig(root=str(tmp_path), normal_dir="ok", abnormal_dir="missing"), "folder")


def test_a_mistyped_folder_mask_dir_is_refused_before_any_work_naming_the_option_and_path(tmp_path):
    for sub in ("ok", "ng", "masks"):
        (tmp_path / sub).mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "ok" / "0.png")
    cfg = FolderConfig(root=str(tmp_path), normal_dir="ok", abnormal_dir="ng", mask_dir="maks", image_size=32)
    message = "^data.mask_dir: folder " + re.escape(f"{tmp_path / 'maks'} does not exist")
    for check in (lambda: categories(cfg), lambda: build_datamodule(cfg, "folder")):
        with pytest.raises(DataError, match=message):
            check()
    cfg.mask_dir = "masks"
    assert categories(cfg) == ["folder"]


SMALL = dict(seed=3, n_train=2, n_test_good=1, n_per_defect=1, size=64)


def _category_files(folder) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_synthetic_never_deletes_a_folder_it_did_not_write(tmp_path):
    user = tmp_path / "grass"
    (user / "train" / "good").mkdir(parents=True)
    (user / "train" / "good" / "mine.png").write_bytes(b"user data")
    (user / "notes.txt").write_text("keep me")
    before = _category_files(user)
    with pytest.raises(DataError, match=rf"{user}[\s\S]*not written by the synthetic[\s\S]*data\.root"):
        ensure_synthetic(tmp_path, **SMALL)
    assert _category_files(user) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grass"]  # refused before any work


def test_interrupted_synthetic_generation_leaves_the_earlier_set_and_no_partial_one(tmp_path, monkeypatch):
    ensure_synthetic(tmp_path, **{**SMALL, "seed": 1})
    earlier = {c: _category_files(tmp_path / c) for c in SYNTHETIC_CATEGORIES}
    (tmp_path / ".brick.partial-killed").mkdir()  # what a killed generation leaves
    calls, save = [], synthetic._save

    def save_then_fail(array, path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user's Ctrl-C, three files into the new set
        save(array, path)

    monkeypatch.setattr(synthetic, "_save", save_then_fail)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(tmp_path, **SMALL)
    assert {c: _category_files(tmp_path / c) for c in SYNTHETIC_CATEGORIES} == earlier
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == SYNTHETIC_CATEGORIES
    monkeypatch.undo()
    ensure_synthetic(tmp_path, **SMALL)
    assert json.loads((tmp_path / "brick" / "generation.json").read_text())["seed"] == SMALL["seed"]
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == SYNTHETIC_CATEGORIES


_GENERATE_AND_CHECK = """
import sys
from pathlib import Path
from anomalib_lite.data.mvtec import mvtec_records
from anomalib_lite.data.synthetic import DEFECTS, SYNTHETIC_CATEGORIES, ensure_synthetic
from anomalib_lite.data.datamodule import ImageSet
root = Path(sys.argv[1])
ensure_synthetic(root, seed=3, n_train=6, n_test_good=2, n_per_defect=2, size=64)
for category in SYNTHETIC_CATEGORIES:
    train, test = mvtec_records(root, category)
    assert len(ImageSet.load(train, 32, workers=1)) == 6 and len(ImageSet.load(test, 32, workers=1)) == 10
"""


@pytest.mark.slow
def test_two_jobs_generating_at_once_each_read_a_complete_set(tmp_path):
    jobs = [
        subprocess.Popen([sys.executable, "-c", _GENERATE_AND_CHECK, str(tmp_path)], stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    for job in jobs:
        assert job.wait(timeout=300) == 0, job.stderr.read()
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == SYNTHETIC_CATEGORIES
