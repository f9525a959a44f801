"""MVTec AD 2, MVTec LOCO AD, KolektorSDD2, MPDD and Real-IAD: tiny archives (or folders) fabricated here in each
published layout, prepared from local files only (never a live URL), loaded, and trained on in a tiny run."""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data import build_datamodule, categories, dataset_config_class
from anomalib_lite.data import download as dl
from anomalib_lite.data.conversion import STAMP
from anomalib_lite.data.download import file_digests, prepare_dataset
from anomalib_lite.data.kolektor import KSDD2_DOWNLOAD
from anomalib_lite.data.mvtec import MPDD_CATEGORIES
from anomalib_lite.data.mvtec_ad2 import MVTEC_AD2_CATEGORIES, MVTEC_AD2_DOWNLOAD
from anomalib_lite.data.mvtec_loco import LOCO_CATEGORIES, LOCO_DOWNLOAD
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.data.realiad import RealIADConfig
from anomalib_lite.errors import ConfigError, DataError
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.hfr import HFRConfig
from anomalib_lite.pipeline.config import validate
from anomalib_lite.pipeline.training import run_config, train_run

SIDE = 32  # the fabricated images' side: decoded at data.image_size=32, masks compare pixel for pixel


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _normal(rng: np.random.Generator, shape: tuple[int, int] = (SIDE, SIDE)) -> bytes:
    return _png((120 + rng.normal(0, 10, (*shape, 3))).clip(0, 255).astype(np.uint8))


def _defect(rng: np.random.Generator, value: int = 255) -> tuple[bytes, np.ndarray]:
    """A grey image with a bright square, and its mask (0 and ``value``)."""
    image = (120 + rng.normal(0, 10, (SIDE, SIDE, 3))).clip(0, 255).astype(np.uint8)
    mask = np.zeros((SIDE, SIDE), np.uint8)
    y, x = rng.integers(2, SIDE - 10, 2)
    image[y : y + 8, x : x + 8] = 250
    mask[y : y + 8, x : x + 8] = value
    return _png(image), mask


def _tar(path: Path, files: dict[str, bytes], mode: str = "w") -> Path:
    with tarfile.open(path, mode) as tar:
        for name, payload in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def _zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, payload in files.items():
            archive.writestr(name, payload)
    return path


def _trust(monkeypatch, name: str, archive: Path, url: str = "https://invalid.example/never-fetched") -> None:
    """Make ``archive`` the one whose sha256 prepare_data expects for dataset ``name``."""
    spec = dl.PUBLISHED_DATASETS[name]
    file = DownloadFile(spec.download.name, url, "", file_digests(archive)["sha256"])
    monkeypatch.setitem(dl.PUBLISHED_DATASETS, name, dataclasses.replace(spec, download=file))


def _mvtec_ad2_files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """mvtec_ad_2.tar.gz's layout under a top folder: 6 train, 1 validation, 2 good and 2 bad public test images,
    1 private test image per category; returns the files and each bad image's mask."""
    files, masks = {}, {}
    for category in MVTEC_AD2_CATEGORIES:
        base = f"mvtec_ad_2/{category}"
        for i in range(6):
            files[f"{base}/train/good/{i:03d}_regular.png"] = _normal(rng)
        files[f"{base}/validation/good/000_regular.png"] = _normal(rng)
        for i in range(2):
            files[f"{base}/test_public/good/{i:03d}_regular.png"] = _normal(rng)
            image, mask = _defect(rng)
            files[f"{base}/test_public/bad/{i:03d}_regular.png"] = image
            files[f"{base}/test_public/ground_truth/bad/{i:03d}_regular_mask.png"] = _png(mask)
            masks[f"{category}/{i:03d}_regular.png"] = mask
        files[f"{base}/test_private/000_regular.png"] = _normal(rng)
        files[f"{base}/test_private_mixed/000_regular.png"] = _normal(rng)
    return files, masks


def _loco_files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """mvtec_loco_anomaly_detection.tar.xz's layout: per category 6 train, 1 validation, 2 good, 2 logical and
    2 structural test images; each anomaly's region split over two mask files (values 255 and 254, as LOCO's
    defect types have their own values). Returns the files and each anomalous image's merged mask."""
    files, merged = {}, {}
    for category in LOCO_CATEGORIES:
        base = f"mvtec_loco_anomaly_detection/{category}"
        for i in range(6):
            files[f"{base}/train/good/{i:03d}.png"] = _normal(rng)
        files[f"{base}/validation/good/000.png"] = _normal(rng)
        for i in range(2):
            files[f"{base}/test/good/{i:03d}.png"] = _normal(rng)
        for kind in ("logical_anomalies", "structural_anomalies"):
            for i in range(2):
                image, first = _defect(rng)
                second = np.zeros_like(first)
                second[-6:, :5] = 254  # a second region, in its own file
                files[f"{base}/test/{kind}/{i:03d}.png"] = image
                files[f"{base}/ground_truth/{kind}/{i:03d}/000.png"] = _png(first)
                files[f"{base}/ground_truth/{kind}/{i:03d}/001.png"] = _png(second)
                merged[f"{category}/{kind}/{i:03d}"] = (first > 0) | (second > 0)
    return files, merged


def _ksdd2_files(rng: np.random.Generator) -> dict[str, bytes]:
    """KolektorSDD2.zip's layout: train/ and test/ with <id>.png and <id>_GT.png (ids as published: 5 digits),
    two of the training images and one test image defective; the archive's stray copies and split files too."""
    files = {"split_weakly_0.pyb": b"pickle of a weakly supervised split"}
    for split, n, defective in (("train", 8, (1, 4)), ("test", 5, (2,))):
        for i in range(n):
            image_id = f"{10000 + i:05d}" if split == "train" else f"{20000 + i:05d}"
            if i in defective:
                image, mask = _defect(rng)
            else:
                image, mask = _normal(rng), np.zeros((SIDE, SIDE), np.uint8)
            files[f"{split}/{image_id}.png"] = image
            files[f"{split}/{image_id}_GT.png"] = _png(mask)
    files["train/10001 (copy).png"] = files["train/10001.png"]
    files["train/10001_GT (copy).png"] = files["train/10001_GT.png"]
    return files


def _mpdd_files(rng: np.random.Generator) -> dict[str, bytes]:
    """An MPDD archive as a user would zip the downloaded folder: MPDD/<category>/ in the MVTec AD layout."""
    files = {}
    for category in MPDD_CATEGORIES:
        base = f"MPDD/{category}"
        for i in range(6):
            files[f"{base}/train/good/{i:03d}.png"] = _normal(rng)
        files[f"{base}/test/good/000.png"] = _normal(rng)
        for i in range(2):
            image, mask = _defect(rng)
            files[f"{base}/test/scratches/{i:03d}.png"] = image
            files[f"{base}/ground_truth/scratches/{i:03d}_mask.png"] = _png(mask)
    return files


def _write(root: Path, files: dict[str, bytes]) -> None:
    for name, payload in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(payload)


def _realiad(root: Path, rng: np.random.Generator, category: str = "audiojack") -> None:
    """Real-IAD's layout for one category at resolution 1024: 2 normal training samples and 1 normal + 1 defective
    test sample, 5 views each (file names as published), and the multi-view split file."""
    folder = root / "realiad_1024" / category
    split: dict[str, Any] = {"meta": {"prefix": category, "normal_class": "OK"}, "train": [], "test": []}
    for key, sample, defect in (("train", 1, "OK"), ("train", 2, "OK"), ("test", 3, "OK"), ("test", 4, "HS")):
        for view in range(1, 6):
            sub = f"OK/S{sample:04d}" if defect == "OK" else f"NG/{defect}/S{sample:04d}"
            name = f"{sub}/{category}_{sample:04d}_{'OK' if defect == 'OK' else 'NG'}_C{view}_20231021120000"
            entry = {"category": category, "anomaly_class": defect, "image_path": f"{name}.jpg", "mask_path": None}
            if defect == "OK":
                _write(folder, {f"{name}.jpg": _normal(rng)})
            else:
                image, mask = _defect(rng)
                _write(folder, {f"{name}.jpg": image, f"{name}_mask.png": _png(mask)})
                entry["mask_path"] = f"{name}_mask.png"
            split[key].append(entry)
    (root / "realiad_jsons" / "realiad_jsons").mkdir(parents=True, exist_ok=True)
    (root / "realiad_jsons" / "realiad_jsons" / f"{category}.json").write_text(json.dumps(split))


def _tiny_run(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Train and evaluate HFR's tiny setting (one epoch) on ``data`` in process; the content of metrics.json."""
    config = {
        "task_name": f"hfr_{data['name']}",
        "seed": 0,
        "category": data["category"],
        "model": dataclasses.asdict(HFRConfig(epochs=1, conv_blocks=1)),
        "backbone": dataclasses.asdict(BackboneConfig(name="resnet18", weights="none")),
        "data": data,
        "trainer": {"device": "cpu", "progress": False},
        "eval": {"n_maps": 1, "curves": False},
    }
    run, stored = run_config(OmegaConf.create(config))
    return train_run(run, stored, folder)


def _data(name: str, root: Path, category: str, **options: Any) -> dict[str, Any]:
    config = dataset_config_class(name)(name=name, root=str(root), category=category, image_size=SIDE, batch_size=4)
    return {**dataclasses.asdict(config), **options}


def _rows(path: Path) -> list[list[str]]:
    return [row.split(",") for row in path.read_text().splitlines()[1:]]


@pytest.fixture(scope="module")
def mvtec_ad2(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], Path]:
    """MVTec AD 2 prepared from its fabricated archive (a local file://): root, masks, the archive."""
    tmp = tmp_path_factory.mktemp("mvtec_ad2")
    files, masks = _mvtec_ad2_files(np.random.default_rng(0))
    mirror = tmp / "mirror"
    mirror.mkdir()
    archive = _tar(mirror / MVTEC_AD2_DOWNLOAD.name, files, "w:gz")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _trust(monkeypatch, "mvtec_ad2", archive)
        summary = prepare_dataset("mvtec_ad2", tmp / "root", mirror=mirror.as_uri(), progress=False)
    counts = ", ".join(f"{c} (15 images)" for c in MVTEC_AD2_CATEGORIES)  # 6 + 1 + 4 + 2 masks + 2 private
    assert summary == f"mvtec_ad2: {counts} under {tmp / 'root'}"
    return tmp / "root", masks, archive


def test_mvtec_ad2_is_prepared_and_evaluated_on_test_public(mvtec_ad2):
    root, masks, _ = mvtec_ad2
    assert sorted(p.name for p in root.iterdir()) == sorted([*MVTEC_AD2_CATEGORIES, MVTEC_AD2_DOWNLOAD.name])
    assert (root / "can" / STAMP).is_file() and not list(root.glob(".*"))  # no work folder left
    cfg = dataset_config_class("mvtec_ad2")(name="mvtec_ad2", root=str(root), category="all", image_size=SIDE)
    assert categories(cfg) == MVTEC_AD2_CATEGORIES
    datamodule = build_datamodule(cfg, "vial")
    assert len(datamodule.train_set) == 6  # train/good only: validation/good is not used
    test = datamodule.test_set
    assert [(r.path.parent.name, r.label, r.defect) for r in test.records] == [
        ("good", 0, "good"),
        ("good", 0, "good"),
        ("bad", 1, "bad"),
        ("bad", 1, "bad"),
    ]  # test_public only: no private image
    for i, record in enumerate(test.records):
        expected = masks[f"vial/{record.path.name}"] > 0 if record.label else np.zeros((SIDE, SIDE), bool)
        assert np.array_equal(test.masks[i].numpy(), expected)


@pytest.mark.slow
def test_mvtec_ad2_trains(mvtec_ad2, tmp_path):
    results = _tiny_run(_data("mvtec_ad2", mvtec_ad2[0], "can"), tmp_path)
    metrics = results["categories"]["can"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (4, 4)
    assert 0 <= metrics["image_auroc"] <= 1 and 0 <= metrics["aupro"] <= 1
    assert [row[0].split("/")[-2] for row in _rows(tmp_path / "scores" / "can.csv")] == ["good"] * 2 + ["bad"] * 2


@pytest.fixture(scope="module")
def loco(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray]]:
    """MVTec LOCO AD prepared from its fabricated .tar.xz given as a local copy (--archive)."""
    tmp = tmp_path_factory.mktemp("loco")
    files, merged = _loco_files(np.random.default_rng(1))
    archive = _tar(tmp / LOCO_DOWNLOAD.name, files, "w:xz")
    with pytest.MonkeyPatch.context() as monkeypatch:
        _trust(monkeypatch, "mvtec_loco", archive)
        summary = prepare_dataset("mvtec_loco", tmp / "root", progress=False, archive=archive)
    assert summary.startswith("mvtec_loco: breakfast_box (21 images), juice_bottle (21 images)")
    return tmp / "root", merged


@pytest.mark.parametrize(
    ("anomaly_types", "kinds"),
    [
        ("all", ["logical_anomalies", "structural_anomalies"]),
        ("structural", ["structural_anomalies"]),
        ("logical", ["logical_anomalies"]),
    ],
)
def test_loco_merges_each_images_masks_and_splits_structural_from_logical(loco, anomaly_types, kinds):
    root, merged = loco
    cfg = dataset_config_class("mvtec_loco")(
        name="mvtec_loco", root=str(root), category="pushpins", image_size=SIDE, anomaly_types=anomaly_types
    )
    test = build_datamodule(cfg, "pushpins").test_set
    assert [r.defect for r in test.records] == ["good", "good"] + [kind for kind in kinds for _ in range(2)]
    for i, record in enumerate(test.records[2:], start=2):
        assert record.mask_path == root / "pushpins" / "ground_truth" / record.defect / record.path.stem
        assert np.array_equal(test.masks[i].numpy(), merged[f"pushpins/{record.defect}/{record.path.stem}"])
    assert all(test.mask_valid.tolist())


def test_loco_refuses_an_unknown_anomaly_type(loco):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=["data=mvtec_loco", "data.anomaly_types=semantic"])
    with pytest.raises(ConfigError, match=r"data.anomaly_types='semantic'; choices: all, logical, structural"):
        validate(cfg)


@pytest.mark.slow
def test_loco_trains_on_the_structural_anomalies(loco, tmp_path):
    data = _data("mvtec_loco", loco[0], "juice_bottle", anomaly_types="structural")
    metrics = _tiny_run(data, tmp_path)["categories"]["juice_bottle"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (4, 4)
    defects = [row[3] for row in _rows(tmp_path / "scores" / "juice_bottle.csv")]
    assert defects == ["good", "good", "structural_anomalies", "structural_anomalies"]


@pytest.fixture(scope="module")
def ksdd2(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ksdd2")
    mirror = tmp / "mirror"
    mirror.mkdir()
    archive = _zip(mirror / KSDD2_DOWNLOAD.name, _ksdd2_files(np.random.default_rng(2)))
    with pytest.MonkeyPatch.context() as monkeypatch:
        _trust(monkeypatch, "ksdd2", archive)
        summary = prepare_dataset("ksdd2", tmp / "root", mirror=mirror.as_uri(), progress=False)
    assert summary == f"ksdd2: train (18 images), test (10 images) under {tmp / 'root'}"  # the copies included
    return tmp / "root"


def test_ksdd2_labels_come_from_the_masks_and_training_keeps_the_normal_images(ksdd2):
    cfg = dataset_config_class("ksdd2")(name="ksdd2", root=str(ksdd2), image_size=SIDE)
    assert categories(cfg) == ["ksdd2"]
    datamodule = build_datamodule(cfg, "ksdd2")
    train_names = [r.path.name for r in datamodule.train_set.records]
    assert train_names == [f"1000{i}.png" for i in (0, 2, 3, 5, 6, 7)]  # 10001 and 10004 are defective; no copy
    test = datamodule.test_set
    assert [(r.path.name, r.label) for r in test.records] == [(f"2000{i}.png", int(i == 2)) for i in range(5)]
    assert test.records[2].mask_path == ksdd2 / "test" / "20002_GT.png"
    assert test.masks[2].any() and not test.masks[[0, 1, 3, 4]].any()
    with pytest.raises(ConfigError, match=r"category='01': KolektorSDD2 has one category, ksdd2"):
        categories(dataclasses.replace(cfg, category="01"))


def test_ksdd2_image_without_its_mask_is_named(ksdd2, tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "30000.png").write_bytes(_normal(np.random.default_rng(3)))
    cfg = dataset_config_class("ksdd2")(name="ksdd2", root=str(tmp_path), image_size=SIDE)
    with pytest.raises(DataError, match=r"1 image\(s\) without their <id>_GT mask: .*train.30000\.png"):
        build_datamodule(cfg, "ksdd2")


@pytest.mark.slow
def test_ksdd2_trains(ksdd2, tmp_path):
    metrics = _tiny_run(_data("ksdd2", ksdd2, "ksdd2"), tmp_path)["categories"]["ksdd2"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (5, 5)


@pytest.fixture(scope="module")
def mpdd(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mpdd")
    archive = _zip(tmp / "MPDD.zip", _mpdd_files(np.random.default_rng(4)))
    summary = prepare_dataset("mpdd", tmp / "root", progress=False, archive=archive)  # no checksum is known
    assert summary == f"mpdd: {', '.join(f'{c} (11 images)' for c in MPDD_CATEGORIES)} under {tmp / 'root'}"
    return tmp / "root"


def test_mpdd_is_read_in_the_mvtec_layout(mpdd):
    cfg = dataset_config_class("mpdd")(name="mpdd", root=str(mpdd), category="all", image_size=SIDE)
    assert categories(cfg) == MPDD_CATEGORIES
    test = build_datamodule(cfg, "tubes").test_set
    assert [(r.label, r.defect, r.mask_path is not None) for r in test.records] == [
        (0, "good", False),
        (1, "scratches", True),
        (1, "scratches", True),
    ]


def test_mpdd_without_a_local_archive_says_where_to_get_it(tmp_path):
    with pytest.raises(
        DataError, match=r"mpdd: no public URL to download it from\. MPDD: download it from https://vutbr"
    ):
        prepare_dataset("mpdd", tmp_path / "mpdd", progress=False)


@pytest.mark.slow
def test_mpdd_trains(mpdd, tmp_path):
    metrics = _tiny_run(_data("mpdd", mpdd, "metal_plate"), tmp_path)["categories"]["metal_plate"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (3, 3)


@pytest.fixture(scope="module")
def realiad(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("realiad")
    _realiad(root, np.random.default_rng(5))
    assert prepare_dataset("realiad", root, progress=False) == f"realiad: 1 of 30 categories under {root}: audiojack"
    return root


def test_realiad_reads_its_split_file_and_keeps_the_chosen_views(realiad):
    cfg = RealIADConfig(root=str(realiad), category="audiojack", image_size=SIDE)
    datamodule = build_datamodule(cfg, "audiojack")
    assert len(datamodule.train_set) == 10  # 2 samples × 5 views
    test = datamodule.test_set.records
    assert [(r.label, r.defect) for r in test] == [(0, "good")] * 5 + [(1, "scratch")] * 5
    assert all(r.mask_path is not None and r.mask_path.name.endswith("_mask.png") for r in test[5:])
    cfg = dataclasses.replace(cfg, views=["C1", "C3"])
    views = [r.path.name.split("_")[3] for r in build_datamodule(cfg, "audiojack").test_set.records]
    assert views == ["C1", "C3", "C1", "C3"]


def test_realiad_refuses_anomalous_training_entries_and_absent_data(realiad, tmp_path):
    split = json.loads((realiad / "realiad_jsons" / "realiad_jsons" / "audiojack.json").read_text())
    split["train"].append(split["test"][-1])
    (tmp_path / "jsons").mkdir()
    (tmp_path / "jsons" / "audiojack.json").write_text(json.dumps(split))
    cfg = RealIADConfig(root=str(realiad), category="audiojack", image_size=SIDE, split_dir=str(tmp_path / "jsons"))
    with pytest.raises(DataError, match=r"audiojack\.json: train\[10\] is anomalous \(HS\)"):
        build_datamodule(cfg, "audiojack")
    with pytest.raises(DataError, match=r"No Real-IAD category found[\s\S]*huggingface\.co/datasets/Real-IAD"):
        prepare_dataset("realiad", tmp_path / "absent", progress=False)
    with pytest.raises(ConfigError, match=r"data.views=\['C6'\]"):
        validate(OmegaConf.create({"model": {"name": "hfr"}, "data": {"name": "realiad", "views": ["C6"]}}))


@pytest.mark.slow
def test_realiad_trains(realiad, tmp_path):
    metrics = _tiny_run(_data("realiad", realiad, "audiojack"), tmp_path)["categories"]["audiojack"]
    assert (metrics["n_images"], metrics["n_pixel_images"]) == (10, 10)


@pytest.mark.parametrize("name", ["mvtec_ad2", "mvtec_loco", "ksdd2", "mpdd", "realiad"])
def test_each_config_composes_and_an_absent_dataset_says_how_to_get_it(name, tmp_path):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[f"data={name}", f"data.root={tmp_path / 'absent'}"])
    data = validate(cfg).data
    assert (data.name, data.image_size, data.tile_size) == (name, 256, None)
    with pytest.raises(DataError, match=rf"looked for [\s\S]*layout[\s\S]*prepare_data\.py {name}"):
        categories(data)


def test_a_wrong_checksum_or_archive_installs_nothing(tmp_path, monkeypatch):
    files, _ = _mvtec_ad2_files(np.random.default_rng(6))
    archive = _tar(tmp_path / MVTEC_AD2_DOWNLOAD.name, files, "w:gz")
    root = tmp_path / "root"
    with pytest.raises(DataError, match=r"sha256 [0-9a-f]{64} differs from the expected c0ded99e.*anomalib records"):
        prepare_dataset("mvtec_ad2", root, progress=False, archive=archive)
    assert not root.exists()
    files = {k: v for k, v in files.items() if not k.startswith("mvtec_ad_2/walnuts/train/")}
    (tmp_path / "other").mkdir()
    archive = _tar(tmp_path / "other" / MVTEC_AD2_DOWNLOAD.name, files, "w:gz")
    _trust(monkeypatch, "mvtec_ad2", archive)
    with pytest.raises(DataError, match=r"no folder holds all of can, .*\(each with train/good/\); missing: walnuts"):
        prepare_dataset("mvtec_ad2", root, progress=False, archive=archive)
    assert list(root.iterdir()) == []  # the work folder is gone, nothing installed
    (root / "can").mkdir()
    (root / "can" / "mine.txt").write_text("not from prepare_data")
    with pytest.raises(DataError, match=r"can exists but was not written by this conversion"):
        prepare_dataset("mvtec_ad2", root, progress=False, archive=archive)


def test_download_checks_sha256(tmp_path):
    source = tmp_path / "file.bin"
    source.write_bytes(b"payload")
    digest = file_digests(source)["sha256"]
    with pytest.raises(DataError, match=rf"sha256 {digest} differs from the expected 00ff; nothing was kept"):
        dl.download(source.as_uri(), tmp_path / "out" / "file.bin", sha256="00ff", progress=False)
    assert list((tmp_path / "out").iterdir()) == []
    assert dl.download(source.as_uri(), tmp_path / "out" / "file.bin", sha256=digest, progress=False).is_file()
