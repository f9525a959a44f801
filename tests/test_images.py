"""Reading image and mask files as users ship them: label masks, broken files, huge files, EXIF orientation."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import signal
import struct

import numpy as np
import pytest
from PIL import Image, ImageFilter

from anomalib_lite.data import DataConfig, DataModule, ImageRecord, build_datamodule
from anomalib_lite.data.images import read_image, read_mask
from anomalib_lite.errors import DataError

SIDE = 48
DEFECT = np.zeros((SIDE, SIDE), bool)
DEFECT[10:30, 5:25] = True


def _label(value: int, dtype: type = np.uint8) -> np.ndarray:
    """The defect rectangle as a label image: ``value`` on it, 0 elsewhere."""
    return DEFECT.astype(dtype) * dtype(value)


def _palette_mask() -> Image.Image:
    image = Image.fromarray(_label(1)).convert("P")
    image.putpalette([0, 0, 0, 255, 0, 0])  # index 0 black, index 1 red
    return image


def _la_mask() -> Image.Image:
    return Image.fromarray(np.dstack([_label(255), np.full((SIDE, SIDE), 255, np.uint8)]), "LA")


MASKS = {
    "0/1 8-bit": lambda: Image.fromarray(_label(1)),
    "0/1 16-bit": lambda: Image.fromarray(_label(1, np.uint16)),
    "0/255 8-bit": lambda: Image.fromarray(_label(255)),
    "0/255 16-bit": lambda: Image.fromarray(_label(255, np.uint16)),
    "0/65535 16-bit": lambda: Image.fromarray(_label(65535, np.uint16)),
    "class ids 1 and 2": lambda: Image.fromarray(_label(1) + (DEFECT & (np.arange(SIDE) > 15)).astype(np.uint8)),
    "1-bit": lambda: Image.fromarray(DEFECT),
    "palette, red on black": _palette_mask,
    "grey with alpha": _la_mask,
    "RGB 0/1": lambda: Image.fromarray(np.dstack([_label(1)] * 3)),
    "RGB red on black": lambda: Image.fromarray(np.dstack([_label(255), _label(0), _label(0)])),
    "0/1 32-bit": lambda: Image.fromarray(_label(1, np.int32), "I"),
}


@pytest.mark.parametrize("kind", list(MASKS))
def test_label_masks_of_any_depth_and_mode_mark_every_labelled_pixel(tmp_path, kind):
    path = tmp_path / ("mask.tif" if "32-bit" in kind else "mask.png")  # PNG has no 32-bit grey
    MASKS[kind]().save(path)
    assert np.array_equal(read_mask(path, SIDE), DEFECT)


def test_anti_aliased_and_compressed_masks_keep_the_half_range_threshold(tmp_path):
    blurred = np.asarray(Image.fromarray(_label(255)).filter(ImageFilter.GaussianBlur(2)))
    assert len(np.unique(blurred)) > 20  # really anti-aliased: many grey levels on the edge
    Image.fromarray(blurred).save(tmp_path / "aa.png")
    assert np.array_equal(read_mask(tmp_path / "aa.png", SIDE), blurred > 127)
    graded16 = blurred.astype(np.uint16) * 257  # the same mask on the 16-bit scale
    Image.fromarray(graded16).save(tmp_path / "aa16.png")
    assert np.array_equal(read_mask(tmp_path / "aa16.png", SIDE), graded16 > 32767)
    Image.fromarray(_label(255)).save(tmp_path / "mask.jpg", quality=75)
    noisy = np.asarray(Image.open(tmp_path / "mask.jpg"))
    assert ((noisy > 0) & ~DEFECT).any()  # compression noise outside the defect: not foreground
    assert np.array_equal(read_mask(tmp_path / "mask.jpg", SIDE), noisy > 127)


def _write_category(tmp_path, masks: dict[str, np.ndarray]) -> tuple[list[ImageRecord], list[ImageRecord]]:
    rng = np.random.default_rng(0)
    train = []
    for i in range(3):
        path = tmp_path / f"train{i}.png"
        Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(path)
        train.append(ImageRecord(path, 0))
    test = [ImageRecord(train[0].path, 0)]
    for name, mask in masks.items():
        Image.fromarray(rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
        Image.fromarray(mask).save(tmp_path / f"{name}_mask.png")
        test.append(ImageRecord(tmp_path / f"{name}.png", 1, tmp_path / f"{name}_mask.png", "defect"))
    return train, test


def test_defect_image_with_an_empty_mask_is_listed_and_warned(tmp_path, caplog):
    train, test = _write_category(tmp_path, {"empty": np.zeros((SIDE, SIDE), np.uint8), "full": _label(1)})
    with caplog.at_level(logging.WARNING):
        dm = DataModule.from_records(train, test, 32, 2, name="t")
    empty = str(tmp_path / "empty.png")
    assert dm.empty_masks == [empty]
    assert empty in caplog.text and str(tmp_path / "full.png") not in caplog.text
    assert dm.test_set.masks[2].any()  # the 0/1 label mask was read as a defect


def _corrupt_chunk_png(path) -> None:
    """A PNG whose third chunk (a second IDAT) has a damaged type: Pillow raises SyntaxError on it."""
    image = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    starts, pos = [], 8
    while pos < len(data):
        starts.append(pos)
        pos += 12 + struct.unpack(">I", data[pos : pos + 4])[0]
    assert [bytes(data[p + 4 : p + 8]) for p in starts[:3]] == [b"IHDR", b"IDAT", b"IDAT"]
    data[starts[2] + 5] ^= 0xFF
    path.write_bytes(bytes(data))


def _write_broken(kind: str, path, monkeypatch) -> None:
    if kind == "corrupt chunk":
        _corrupt_chunk_png(path)
    else:  # more than twice Pillow's pixel limit: DecompressionBombError
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1500)
        Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(path)


@pytest.mark.parametrize("kind", ["corrupt chunk", "decompression bomb"])
@pytest.mark.parametrize("skip_unreadable", [False, True])
def test_every_decoding_failure_names_the_file_and_obeys_skip_unreadable(
    tmp_path, monkeypatch, caplog, kind, skip_unreadable
):
    rng = np.random.default_rng(0)
    good = []
    for i in range(3):  # 32×32: under the lowered pixel limit
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / f"good{i}.png")
        good.append(ImageRecord(tmp_path / f"good{i}.png", 0))
    broken = tmp_path / "broken.png"
    _write_broken(kind, broken, monkeypatch)
    with pytest.raises(DataError, match="broken.png"):
        read_image(broken, 32)
    records = [*good, ImageRecord(broken, 0)]
    if not skip_unreadable:
        with pytest.raises(DataError, match=r"broken\.png[\s\S]*skip_unreadable"):
            DataModule.from_records(records, records, 32, 2, name="t")
        return
    with caplog.at_level(logging.WARNING):
        dm = DataModule.from_records(records, records, 32, 2, skip_unreadable=True, name="t")
    assert [r.path for r in dm.train_set.records] == [r.path for r in good]
    assert str(broken) in caplog.text


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_image_over_the_pixel_limit_but_under_twice_it_is_read_with_a_warning(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 3000)
    path = tmp_path / "large.png"
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(path)  # 4096 pixels
    with caplog.at_level(logging.WARNING):
        assert read_image(path, 32).mean() == 90
    assert str(path) in caplog.text


def test_jpeg_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((40, 80, 3), np.uint8)
    stored[:, 40:] = 255  # stored: left half dark, right half bright
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: shown rotated 90° clockwise, so the left half ends on top
    path = tmp_path / "photo.jpg"
    Image.fromarray(stored).save(path, exif=exif, quality=95)
    image = read_image(path, 32).astype(float)
    assert image[:12].mean() < 30 and image[-12:].mean() > 225


@contextlib.contextmanager
def _fails_instead_of_hanging(fifo, seconds: int = 10):
    """Turn a read blocked on ``fifo`` into a failure: after ``seconds`` a writer opens and closes the FIFO
    (every blocked reader, in any thread, gets end-of-file and returns) and the test fails."""

    def release(*_):
        with contextlib.suppress(OSError):  # no reader waiting in another thread: the main one was interrupted
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        raise TimeoutError(f"reading {fifo} blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, release)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
@pytest.mark.parametrize("skip_unreadable", [False, True])
def test_a_fifo_among_the_training_images_is_refused_by_name_without_opening_it(mvtec_root, caplog, skip_unreadable):
    fifo = mvtec_root / "widget" / "train" / "good" / "000_fifo.png"
    os.mkfifo(fifo)
    folder = mvtec_root / "widget" / "train" / "good" / "001_folder.png"
    folder.mkdir()
    cfg = DataConfig(root=str(mvtec_root), category="widget", image_size=32, skip_unreadable=skip_unreadable)
    with _fails_instead_of_hanging(fifo), caplog.at_level(logging.WARNING):
        for special in (fifo, folder):
            kind = "a FIFO" if special == fifo else "a directory"
            with pytest.raises(DataError, match=f"^{special}: {kind}, not an image file; not read$"):
                read_image(special, 32)
        if not skip_unreadable:
            with pytest.raises(DataError, match=r"2 file\(s\) of the .* train split[\s\S]*000_fifo.png: a FIFO"):
                build_datamodule(cfg, "widget")
            return
        dm = build_datamodule(cfg, "widget")
    assert len(dm.train_set) == 6 and fifo not in {r.path for r in dm.train_set.records}
    assert f"{fifo}: a FIFO" in caplog.text and f"{folder}: a directory" in caplog.text
