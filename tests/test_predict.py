"""predict.py on new images: scores, maps, the stored threshold, and unreadable files."""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_lite.pipeline import prediction
from anomalib_lite.pipeline.inference import load_trained
from anomalib_lite.pipeline.prediction import Prediction, ScoreWriter, score_files, scores_table, write_overlays

from conftest import TINY, run_entry, small_disk


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny HFR run on the synthetic brick category: (run folder, data root)."""
    base = tmp_path_factory.mktemp("predict")
    run = base / "run"
    result = run_entry("train.py", *TINY, "category=brick", f"data.root={base / 'data'}", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run, base / "data"


def independent_input(path, size):
    """The model input for the image at ``path``, made here with PIL and the ImageNet normalisation
    written out (not with the package's reading code): ``1×3×size×size``."""
    rgb = Image.open(path).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32) / 255
    array = (array - np.array([0.485, 0.456, 0.406], np.float32)) / np.array([0.229, 0.224, 0.225], np.float32)
    return torch.from_numpy(array.transpose(2, 0, 1).copy())[None]


def test_a_folder_with_a_corrupt_image_scores_every_other_image(trained, tmp_path):
    run, data = trained
    ckpt = run / "checkpoints" / "brick" / "last.pt"
    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    sources = sorted((data / "brick" / "test").rglob("*.png"))[:3]
    for i, source in enumerate(sources):
        shutil.copy(source, (new if i else new / "sub") / f"img{i}.png")
    Image.open(sources[2]).convert("RGB").save(new / "img2.jpg", quality=60)  # same stem as img2.png
    (new / "broken.png").write_bytes(sources[0].read_bytes()[:100])  # a truncated PNG
    (new / "notes.txt").write_text("not an image")

    out = tmp_path / "out"
    result = run_entry("predict.py", f"ckpt_path={ckpt}", f"input={new}", "progress=false", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broken.png" in result.stderr + result.stdout
    rows = {row["file"].removeprefix(f"{new}/"): row for row in csv.DictReader((out / "scores.csv").open())}
    assert sorted(rows) == ["broken.png", "img1.png", "img2.jpg", "img2.png", "sub/img0.png"]
    assert rows["broken.png"]["score"] == "" and "broken.png" in rows["broken.png"]["error"]

    _, model = load_trained(ckpt)
    model.eval()
    threshold = json.loads((run / "metrics.json").read_text())["categories"]["brick"]["image_threshold"]
    for name in ("sub/img0.png", "img1.png", "img2.jpg", "img2.png"):
        expected = model.predict(independent_input(new / name, 64))
        assert float(rows[name]["score"]) == pytest.approx(float(expected.score[0]), rel=1e-5)
        assert rows[name]["anomalous"] == str(int(float(rows[name]["score"]) >= threshold))
        assert rows[name]["error"] == ""
        stored = np.load(out / "maps" / f"{name}.npy")  # a.png and a.jpg: one map each
        np.testing.assert_allclose(stored, expected.anomaly_map[0].float().numpy(), rtol=1e-5, atol=1e-6)
        assert (out / "maps" / f"{name}.png").is_file()
    assert not np.array_equal(np.load(out / "maps" / "img2.png.npy"), np.load(out / "maps" / "img2.jpg.npy"))
    assert not (out / "maps" / "broken.png.npy").exists()


def test_predict_needs_only_the_checkpoint_not_the_training_data(tmp_path, mvtec_root):
    run = tmp_path / "run"
    result = run_entry(
        "train.py",
        "data=mvtec",
        f"data.root={mvtec_root}",
        "category=widget",
        "data.image_size=64",
        "trainer.max_epochs=1",
        "trainer.progress=false",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    new = tmp_path / "new"
    shutil.copytree(mvtec_root / "widget" / "test" / "spot", new)
    shutil.rmtree(mvtec_root)  # another machine: only the checkpoint and the new images
    out = tmp_path / "out"
    result = run_entry(
        "predict.py",
        f"ckpt_path={run / 'checkpoints' / 'widget' / 'last.pt'}",
        f"input={new}",
        "progress=false",
        f"hydra.run.dir={out}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 3 and all(row["score"] and row["anomalous"] in ("0", "1") for row in rows)


class StopsAtTheSecondBatch:
    """A scorer whose second call is interrupted (as by Ctrl-C)."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, images):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        images = torch.from_numpy(images).float()
        return SimpleNamespace(score=images.mean(dim=(1, 2, 3)), anomaly_map=images[..., 0])


def test_an_interrupted_call_keeps_the_scores_of_the_batches_done(tmp_path):
    files = []
    for i in range(4):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(files[-1])
    scores_path = tmp_path / "scores.csv"
    with scores_table(scores_path, None) as table, pytest.raises(KeyboardInterrupt):
        score_files(StopsAtTheSecondBatch(), files, tmp_path, 8, 2, tmp_path / "maps", table, progress=False)
    rows = list(csv.DictReader(scores_path.open()))
    assert [row["file"] for row in rows] == [str(files[0]), str(files[1])]
    assert all(row["score"] for row in rows)


def test_a_given_threshold_and_bad_inputs(trained, tmp_path):
    run, data = trained
    ckpt = run / "checkpoints" / "brick" / "last.pt"
    image = sorted((data / "brick" / "train" / "good").glob("*.png"))[0]
    out = tmp_path / "out"
    result = run_entry(
        "predict.py", f"ckpt_path={ckpt}", f"input={image}", "threshold=-1e9", "progress=false", f"hydra.run.dir={out}"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (row,) = csv.DictReader((out / "scores.csv").open())
    assert row["anomalous"] == "1"

    result = run_entry("predict.py", f"ckpt_path={ckpt}", f"input={tmp_path / 'absent'}", f"hydra.run.dir={out}2")
    assert result.returncode == 1 and "input=" in result.stderr + result.stdout
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    result = run_entry("predict.py", f"ckpt_path={ckpt}", f"input={bad}", f"hydra.run.dir={out}3")
    assert result.returncode == 1 and "none of the 1 files could be read" in result.stderr + result.stdout
    assert "x.png" in (out.parent / "out3" / "scores.csv").read_text()


def mean_scorer(images):
    """A scorer for tests: the mean pixel value as the score, the red channel as the map."""
    images = torch.from_numpy(images).float()
    return SimpleNamespace(score=images.mean(dim=(1, 2, 3)), anomaly_map=images[..., 0])


def images_in(folder, n: int) -> list:
    """``n`` small PNG files in ``folder``, with long names (rows of about 200 bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(n):
        files.append(folder / f"{'a_long_file_name_' * 8}{i:03d}.png")
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(files[-1])
    return files


class FillsUp(io.FileIO):
    """An unbuffered file on a disk with ``free`` bytes left: a write beyond them writes what fits and returns its
    length, the next one fails with ENOSPC (as ``write(2)`` on a full disk)."""

    free = 1000

    def write(self, data) -> int:
        if self.free == 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = super().write(bytes(memoryview(data)[: self.free]))
        self.free -= written
        return written


def test_a_full_disk_while_writing_scores_keeps_every_row_whole(tmp_path):
    files = images_in(tmp_path / "in", 12)
    path = tmp_path / "scores.csv"
    with FillsUp(path, "xb") as file, pytest.raises(OSError) as raised:
        score_files(mean_scorer, files, tmp_path / "in", 8, 4, tmp_path / "maps", ScoreWriter(file, 0.5), False)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)  # the one-line message's file
    text = path.read_bytes().decode()
    assert text.endswith("\r\n") and len(text) <= 1000
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [row["file"] for row in rows] == [str(f) for f in files[: len(rows)]] and len(rows) % 4 == 0
    assert all(row["score"] and row["anomalous"] in ("0", "1") for row in rows)


def test_a_table_whose_header_cannot_be_written_is_not_left_empty(tmp_path, monkeypatch):
    path = tmp_path / "scores.csv"
    monkeypatch.setattr(FillsUp, "free", 0)
    monkeypatch.setattr(prediction.Path, "open", lambda self, mode, buffering=-1: FillsUp(self, mode))
    with pytest.raises(OSError, match="No space left"), scores_table(path, None):
        pass
    assert not path.exists()


def fill_the_disk_for(monkeypatch, suffix: str) -> None:
    """From now on, every file being written atomically whose name ends with ``suffix`` finds a disk with 10 bytes
    free (a buffered file over :class:`FillsUp`, as ``open`` gives)."""
    real_open = Path.open

    def open_on_a_full_disk(path, mode="r", *args, **kwargs):
        if ".partial-" in path.name and path.name.split(".partial-")[0].endswith(suffix):
            raw = FillsUp(path, "wb")
            raw.free = 10
            return io.BufferedWriter(raw)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", open_on_a_full_disk)


def test_a_full_disk_while_saving_a_map_leaves_no_partial_map(tmp_path, monkeypatch):
    files = images_in(tmp_path / "in", 4)
    fill_the_disk_for(monkeypatch, ".npy")
    with scores_table(tmp_path / "scores.csv", None) as table, pytest.raises(OSError) as raised:
        score_files(mean_scorer, files, tmp_path / "in", 8, 2, tmp_path / "maps", table, False)
    target = tmp_path / "maps" / f"{files[0].name}.npy"
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(target)  # the one-line message's file
    assert list((tmp_path / "maps").iterdir()) == []  # neither the map nor a partial file
    assert (tmp_path / "scores.csv").read_bytes() == b"file,score,anomalous,error\r\n"  # its batch's rows not written


def test_a_full_disk_while_drawing_an_overlay_leaves_no_partial_png(tmp_path, monkeypatch):
    files = images_in(tmp_path / "in", 2)
    with scores_table(tmp_path / "scores.csv", None) as table:
        results, scale = score_files(mean_scorer, files, tmp_path / "in", 8, 2, tmp_path / "maps", table, False)
    fill_the_disk_for(monkeypatch, ".png")
    with pytest.raises(OSError) as raised:
        write_overlays(results, tmp_path / "maps", 8, scale)
    assert raised.value.errno == errno.ENOSPC
    assert raised.value.filename == str(tmp_path / "maps" / f"{files[0].name}.png")
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == sorted(f"{f.name}.npy" for f in files)


def test_an_unscored_file_gets_no_overlay(tmp_path):
    (tmp_path / "maps").mkdir()
    write_overlays([Prediction(tmp_path / "x.png", "x.png", error="unreadable")], tmp_path / "maps", 8, (0.0, 1.0))
    assert list((tmp_path / "maps").iterdir()) == []


def test_predict_onto_a_disk_that_fills_up_says_so_and_leaves_only_whole_files(trained, tmp_path):
    run, data = trained
    with small_disk(tmp_path / "disk", "96k") as disk:
        out = disk / "out"
        result = run_entry(
            "predict.py",
            f"ckpt_path={run / 'checkpoints' / 'brick' / 'last.pt'}",
            f"input={data / 'brick' / 'test'}",
            "batch_size=2",
            "progress=false",
            f"hydra.run.dir={out}",
        )
        output = result.stdout + result.stderr
        assert result.returncode == 1, output[-2000:]
        assert "No space left on device" in output and "Traceback" not in output
        assert not [p for p in out.rglob("*") if ".partial-" in p.name]
        rows = list(csv.DictReader((out / "scores.csv").open()))
        maps = sorted(out.glob("maps/**/*.npy"))
        assert 0 < len(maps) < 12 and len(rows) <= len(maps)
        for path in maps:
            assert np.load(path).shape == (64, 64)  # whole
        for row in rows:
            relative = row["file"].removeprefix(f"{data / 'brick' / 'test'}/")
            assert row["score"] and (out / "maps" / f"{relative}.npy").is_file()
