"""predict.py on new images: scores, maps, the stored threshold, and unreadable files."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch

from anomalib_lite.cli.evaluate import load_trained
from anomalib_lite.data.images import read_image, to_model_input

from conftest import TINY, run_entry


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny HFR run on the synthetic brick category: (run folder, data root)."""
    base = tmp_path_factory.mktemp("predict")
    run = base / "run"
    result = run_entry("train.py", *TINY, "category=brick", f"data.root={base / 'data'}", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    return run, base / "data"


def test_a_folder_with_a_corrupt_image_scores_every_other_image(trained, tmp_path):
    run, data = trained
    ckpt = run / "checkpoints" / "brick" / "last.pt"
    new = tmp_path / "new"
    (new / "sub").mkdir(parents=True)
    sources = sorted((data / "brick" / "test").rglob("*.png"))[:3]
    for i, source in enumerate(sources):
        shutil.copy(source, (new if i else new / "sub") / f"img{i}.png")
    (new / "broken.png").write_bytes(sources[0].read_bytes()[:100])  # a truncated PNG
    (new / "notes.txt").write_text("not an image")

    out = tmp_path / "out"
    result = run_entry("predict.py", f"ckpt_path={ckpt}", f"input={new}", "progress=false", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "broken.png" in result.stderr + result.stdout
    rows = {row["file"].split("/")[-1]: row for row in csv.DictReader((out / "scores.csv").open())}
    assert sorted(rows) == ["broken.png", "img0.png", "img1.png", "img2.png"]
    assert rows["broken.png"]["score"] == "" and "broken.png" in rows["broken.png"]["error"]

    _, model = load_trained(ckpt)
    model.eval()
    threshold = json.loads((run / "metrics.json").read_text())["categories"]["brick"]["image_threshold"]
    for name, path in (("img0.png", new / "sub" / "img0.png"), ("img1.png", new / "img1.png")):
        image = torch.from_numpy(read_image(path, 64).copy())[None]
        expected = float(model.predict(to_model_input(image)).score[0])
        assert float(rows[name]["score"]) == pytest.approx(expected, rel=1e-5)
        assert rows[name]["anomalous"] == str(int(float(rows[name]["score"]) >= threshold))
        assert rows[name]["error"] == ""
    stored = np.load(out / "maps" / "sub" / "img0.npy")
    assert stored.shape == (64, 64) and (out / "maps" / "sub" / "img0.png").is_file()
    assert not (out / "maps" / "broken.npy").exists()


def test_a_given_threshold_and_bad_inputs(trained, tmp_path):
    run, data = trained
    ckpt = run / "checkpoints" / "brick" / "last.pt"
    image = sorted((data / "brick" / "train" / "good").glob("*.png"))[0]
    out = tmp_path / "out"
    result = run_entry("predict.py", f"ckpt_path={ckpt}", f"input={image}", "threshold=-1e9", "progress=false",
                       f"hydra.run.dir={out}")  # fmt: skip
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
