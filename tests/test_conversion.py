"""VisA and BTAD: small archives in the real layouts, built here, converted from local ``file://`` URLs only."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data import DataConfig, build_datamodule, categories
from anomalib_lite.data import conversion as conv
from anomalib_lite.data.conversion import BTAD_CATEGORIES, VISA_CATEGORIES, convert_archive
from anomalib_lite.data.download import file_md5, prepare_dataset
from anomalib_lite.data.one_class import DownloadFile
from anomalib_lite.errors import DataError
from anomalib_lite.pipeline.config import validate

from conftest import run_entry


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def _image(rng: np.random.Generator, fmt: str) -> bytes:
    return _encoded(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), fmt)


def _defect_labels(rng: np.random.Generator) -> np.ndarray:
    """A VisA-style label mask: class ids (0 background; 1, 2 and 255 three defects: every non-zero id counts)."""
    labels = np.zeros((24, 32), np.uint8)
    labels[rng.integers(0, 10) :][:6, 3:9] = 1
    labels[15:20, rng.integers(10, 25) :][:, :4] = 2
    labels[22:, :3] = 255
    return labels


def _visa_files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """VisA_20220922.tar's layout, 2 training + 1 test normal image and 1 anomalous one per category.

    Returns the archive's files and, per anomalous image's member name, its mask's label values.
    """
    files, labels = {}, {}
    rows = ["object,split,label,image,mask"]
    for category in VISA_CATEGORIES:
        data = f"{category}/Data"
        for i, subset in enumerate(("train", "train", "test")):
            files[f"{data}/Images/Normal/{i:04d}.JPG"] = _image(rng, "JPEG")
            rows.append(f"{category},{subset},normal,{data}/Images/Normal/{i:04d}.JPG,")
        files[f"{data}/Images/Anomaly/000.JPG"] = _image(rng, "JPEG")
        labels[f"{data}/Images/Anomaly/000.JPG"] = _defect_labels(rng)
        files[f"{data}/Masks/Anomaly/000.png"] = _encoded(labels[f"{data}/Images/Anomaly/000.JPG"], "PNG")
        rows.append(f"{category},test,anomaly,{data}/Images/Anomaly/000.JPG,{data}/Masks/Anomaly/000.png")
        files[f"{category}/image_anno.csv"] = b"image,label,mask\n"
    files["split_csv/1cls.csv"] = ("\n".join(rows) + "\n").encode()
    files["split_csv/2cls_fewshot.csv"] = b"object,split,label,image,mask\n"
    return files, labels


def _btad_files(rng: np.random.Generator) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """btad.zip's layout (top folder BTech_Dataset_transformed; 01 and 03 .bmp, 02 .png; 03's masks .bmp).

    Returns the archive's files and, per ``ko`` image's member name, its mask's 0–255 values (with an
    anti-aliased edge at 100, which is background, and 200, which is defect).
    """
    files, masks = {}, {}
    for category in BTAD_CATEGORIES:
        base, ext = f"BTech_Dataset_transformed/{category}", "png" if category == "02" else "bmp"
        mask_ext = "bmp" if category == "03" else "png"
        for where, n in (("train/ok", 3), ("test/ok", 1), ("test/ko", 2)):
            for i in range(n):
                files[f"{base}/{where}/{i:04d}.{ext}"] = _image(rng, "BMP" if ext == "bmp" else "PNG")
        for i in range(2):
            mask = np.zeros((24, 32), np.uint8)
            mask[5:12, rng.integers(3, 20) :][:, :8] = 255
            mask[4, 5:12], mask[12, 5:12] = 100, 200
            masks[f"{base}/test/ko/{i:04d}.{ext}"] = mask
            files[f"{base}/ground_truth/ko/{i:04d}.{mask_ext}"] = _encoded(mask, "BMP" if mask_ext == "bmp" else "PNG")
    return files, masks


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
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


def _trust(monkeypatch, name: str, archive: Path) -> None:
    """Make ``archive`` the one whose md5 prepare_data expects for dataset ``name``."""
    spec = conv.CONVERTED_DATASETS[name]
    download = DownloadFile(spec.download.name, "https://invalid.example/never-fetched", file_md5(archive))
    monkeypatch.setitem(conv.CONVERTED_DATASETS, name, dataclasses.replace(spec, download=download))


def _images_and_masks(root: Path, category: str) -> dict[str, list[str]]:
    base = root / category
    return {
        sub: sorted(p.name for p in (base / sub).iterdir())
        for sub in ("train/good", "test/good", "test/bad", "ground_truth/bad")
    }


def test_visa_is_converted_with_its_split_and_binarised_masks(tmp_path, monkeypatch):
    files, labels = _visa_files(np.random.default_rng(0))
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = _tar(mirror / "VisA_20220922.tar", files)
    _trust(monkeypatch, "visa", archive)
    root = tmp_path / "visa"
    summary = prepare_dataset("visa", root, mirror=mirror.as_uri(), progress=False)
    assert summary == (
        f"visa: 12 categories under {root} (24 training, 12 normal and 12 anomalous test images, 12 masks): "
        + ", ".join(VISA_CATEGORIES)
    )
    for category in VISA_CATEGORIES:
        assert _images_and_masks(root, category) == {
            "train/good": ["0000.JPG", "0001.JPG"],
            "test/good": ["0002.JPG"],
            "test/bad": ["000.JPG"],
            "ground_truth/bad": ["000_mask.png"],
        }
        source = f"{category}/Data/Images/Anomaly/000.JPG"
        assert (root / category / "test" / "bad" / "000.JPG").read_bytes() == files[source]
        mask = np.asarray(Image.open(root / category / "ground_truth" / "bad" / "000_mask.png"))
        assert set(np.unique(mask)) == {0, 255}
        assert np.array_equal(mask == 255, labels[source] > 0)  # every class id is a defect
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no work folder left
    cfg = DataConfig(name="visa", root=str(root), category="all", image_size=32)
    assert categories(cfg) == VISA_CATEGORIES
    test = build_datamodule(cfg, "pcb1").test_set
    assert [(r.label, r.defect, r.mask_path is not None) for r in test.records] == [
        (1, "bad", True),
        (0, "good", False),
    ]
    assert test.masks[0].sum() > 0 and test.masks[1].sum() == 0


def test_btad_is_converted_ok_to_good_ko_to_bad_with_mask_names_like_mvtec(tmp_path, monkeypatch):
    files, masks = _btad_files(np.random.default_rng(1))
    files["__MACOSX/BTech_Dataset_transformed/01/train/ok/._0000.bmp"] = b"resource fork"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _trust(monkeypatch, "btad", _zip(mirror / "btad.zip", files))
    root = tmp_path / "btad"
    summary = prepare_dataset("btad", root, mirror=mirror.as_uri(), progress=False)
    assert (
        summary
        == f"btad: 3 categories under {root} (9 training, 3 normal and 6 anomalous test images, 6 masks): 01, 02, 03"
    )
    for category in BTAD_CATEGORIES:
        ext = "png" if category == "02" else "bmp"
        assert _images_and_masks(root, category) == {
            "train/good": [f"000{i}.{ext}" for i in range(3)],
            "test/good": [f"0000.{ext}"],
            "test/bad": [f"000{i}.{ext}" for i in range(2)],
            "ground_truth/bad": ["0000_mask.png", "0001_mask.png"],
        }
        for i in range(2):
            source = f"BTech_Dataset_transformed/{category}/test/ko/000{i}.{ext}"
            mask = np.asarray(Image.open(root / category / "ground_truth" / "bad" / f"000{i}_mask.png"))
            assert np.array_equal(mask, np.where(masks[source] > 127, 255, 0))
    # converting again replaces its own earlier result
    assert prepare_dataset("btad", root, mirror=mirror.as_uri(), progress=False) == summary
    assert categories(DataConfig(name="btad", root=str(root), category="all")) == BTAD_CATEGORIES


def test_an_archive_that_does_not_match_gives_a_clear_error_and_writes_nothing(tmp_path):
    files, _ = _visa_files(np.random.default_rng(2))
    del files["pcb4/Data/Masks/Anomaly/000.png"]
    root = tmp_path / "visa"
    with pytest.raises(DataError, match=r"1 of the 60 files of visa are not in the archive \(first: pcb4/Data/Masks"):
        convert_archive("visa", _tar(tmp_path / "VisA_20220922.tar", files), root, progress=False)
    assert list(root.iterdir()) == []
    btad, _ = _btad_files(np.random.default_rng(3))
    del btad["BTech_Dataset_transformed/02/ground_truth/ko/0001.png"]
    with pytest.raises(DataError, match=r"02/test/ko/0001\.png has no mask in BTech_Dataset_transformed/02/ground_tr"):
        convert_archive("btad", _zip(tmp_path / "btad.zip", btad), tmp_path / "btad", progress=False)
    only_two = {k: v for k, v in _btad_files(np.random.default_rng(3))[0].items() if "/03/" not in k}
    with pytest.raises(DataError, match=r"holds the btad categories 01, 02; btad has 01, 02, 03"):
        convert_archive("btad", _zip(tmp_path / "btad2.zip", only_two), tmp_path / "btad", progress=False)
    with pytest.raises(DataError, match=r"holds no split_csv/1cls\.csv: it is incomplete or not the VisA archive"):
        convert_archive("visa", _zip(tmp_path / "other.zip", only_two), root, progress=False)


def test_a_damaged_archive_names_itself(tmp_path):
    files, _ = _btad_files(np.random.default_rng(4))
    archive = _zip(tmp_path / "btad.zip", files)
    archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataError, match=rf"cannot read {archive} \(BadZipFile[\s\S]*delete it to download it again"):
        convert_archive("btad", archive, tmp_path / "btad", progress=False)
    visa = _visa_files(np.random.default_rng(4))[0]
    tar = _tar(tmp_path / "VisA_20220922.tar", {"split_csv/1cls.csv": visa.pop("split_csv/1cls.csv"), **visa})
    tar.write_bytes(tar.read_bytes()[: tar.stat().st_size * 3 // 5])  # the split file whole, images cut
    with pytest.raises(DataError, match=rf"{tar}.* (incomplete|cannot read).*[Dd]elete it"):
        convert_archive("visa", tar, tmp_path / "visa", progress=False)
    assert list((tmp_path / "visa").iterdir()) == []


def test_a_folder_the_conversion_did_not_write_is_left_alone(tmp_path):
    files, _ = _btad_files(np.random.default_rng(5))
    root = tmp_path / "btad"
    (root / "03").mkdir(parents=True)
    (root / "03" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=rf"{root / '03'} exists but was not written by this conversion"):
        convert_archive("btad", _zip(tmp_path / "btad.zip", files), root, progress=False)
    assert sorted(p.name for p in root.iterdir()) == ["03"]  # checked before any category was written


def test_prepare_data_script_says_where_the_expected_md5_comes_from(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    _zip(mirror / "btad.zip", _btad_files(np.random.default_rng(6))[0])
    result = run_entry(
        "scripts/prepare_data.py",
        "btad",
        "--root",
        str(tmp_path / "btad"),
        "--mirror",
        mirror.as_uri(),
        "--no-progress",
    )
    assert result.returncode == 1
    assert "btad.zip: md5" in result.stdout and "differs from the expected c1fa4d56" in result.stdout
    assert "openvinotoolkit/anomalib" in result.stdout
    assert sorted(p.name for p in (tmp_path / "btad").iterdir()) == []


@pytest.mark.parametrize(("name", "category", "first"), [("visa", "pcb1", "candle"), ("btad", "01", "01")])
def test_absent_visa_or_btad_says_how_to_get_it(tmp_path, name, category, first):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=[f"data={name}", f"category={category}", f"data.root={tmp_path / 'absent'}"])
    data = validate(cfg).data
    with pytest.raises(DataError, match=rf"looked for .*{category}[\s\S]*layout[\s\S]*prepare_data\.py {name}"):
        categories(data)
    # Not the dataset's own category: the missing folder is still the message, not a list of choices.
    with pytest.raises(DataError, match=r"looked for .*bottle.*, but data.root=.*absent is no such folder"):
        categories(dataclasses.replace(data, category="bottle"))
    with pytest.raises(DataError, match=rf"looked for .*{first}.train.good"):  # all: the dataset's own categories
        categories(dataclasses.replace(data, category="all"))
