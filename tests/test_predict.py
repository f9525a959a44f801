"""predict.py on new images: scores, maps, the stored threshold, and unreadable files."""

from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from anomalib_lite.pipeline.inference import load_trained
from anomalib_lite.pipeline.prediction import ScoreWriter, score_files

from conftest import TINY, run_entry


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
    with scores_path.open("w", newline="") as table, pytest.raises(KeyboardInterrupt):
        score_files(
            StopsAtTheSecondBatch(), files, tmp_path, 8, 2, tmp_path / "maps", ScoreWriter(table, None), progress=False
        )
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
