"""export.py: ONNX and TorchScript files that reproduce predict, and predict.py on them."""

from __future__ import annotations

import csv
import errno
import json
import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image
from skimage import data as skdata

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.errors import ConfigError
from anomalib_lite.models import AnomalyModel, build_model
from anomalib_lite.models.base import AnomalyOutput
from anomalib_lite.pipeline import deploy
from anomalib_lite.pipeline.config import validate
from anomalib_lite.pipeline.deploy import ExportError, export_model, load_exported, metadata, require_onnx
from anomalib_lite.pipeline.inference import checkpoint_scorer, stored_threshold

from conftest import TINY, run_entry

# Agreement with predict: the largest difference, relative to the largest value of the map (or score).
TOLERANCE = 1e-4


def real_images(size: int, n: int = 3) -> np.ndarray:
    """``n×size×size×3`` uint8: photographs shipped with scikit-image (the synthetic data's sources)."""
    photos = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()][:n]
    return np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR)) for p in photos])


def expected_output(model: AnomalyModel, images: np.ndarray, grey: bool = False) -> AnomalyOutput:
    """``predict`` of uint8 ``N×S×S×3`` images the way predict.py feeds a checkpoint."""
    model.eval()
    return checkpoint_scorer(model, 1 if grey else 3, torch.device("cpu"))(images)


def assert_matches(got_map, got_score, expected: AnomalyOutput) -> None:
    got_map, got_score = torch.as_tensor(got_map), torch.as_tensor(got_score)
    assert got_map.shape == expected.anomaly_map.shape and got_score.shape == expected.score.shape
    map_scale, score_scale = expected.anomaly_map.abs().max(), expected.score.abs().max()
    assert (got_map - expected.anomaly_map).abs().max() <= TOLERANCE * map_scale
    assert (got_score - expected.score).abs().max() <= TOLERANCE * score_scale


def run_onnx(path, images: np.ndarray) -> list[np.ndarray]:
    """The ONNX file run with onnxruntime as a deployer would: float32 RGB N×3×S×S in [0, 1]."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    pixels = (images.transpose(0, 3, 1, 2) / np.float32(255)).astype(np.float32)
    return session.run(["anomaly_map", "score"], {"image": pixels})


@pytest.fixture
def composed():
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        yield lambda *overrides: validate(compose("train", overrides=list(overrides)))
    GlobalHydra.instance().clear()


def untrained(run):
    """The run's model with random weights (what is exported need not be trained to be reproduced)."""
    torch.manual_seed(0)
    return build_model(run.model, run.backbone)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_exported_file_reproduces_predict_from_uint8_or_float_pixels(composed, tmp_path, fmt):
    run = composed("model=hfr", "data.image_size=64", "backbone.weights=none", "category=brick")
    model = untrained(run)
    path = tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'pt'}"
    sidecar = export_model(model, run, fmt, path, metadata(run, fmt, 0.5, "given here", tmp_path / "last.pt"))
    info = json.loads(sidecar.read_text())
    assert info["image_size"] == 64 and info["threshold"] == 0.5 and info["model"]["family"] == "hfr"
    assert info["input"]["shape"] == ["N", 3, 64, 64]

    images = real_images(64)
    expected = expected_output(model, images)
    if fmt == "onnx":
        assert_matches(*run_onnx(path, images), expected)
    else:
        script = torch.jit.load(str(path))
        pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
        from_uint8, from_float = script(pixels), script(pixels.float() / 255)
        assert_matches(*from_uint8, expected)
        assert torch.equal(from_uint8[0], from_float[0]) and torch.equal(from_uint8[1], from_float[1])
    loaded = load_exported(path)  # what predict.py uses: uint8 and float in [0, 1] alike
    assert loaded.info == info
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2)
    assert torch.equal(loaded(pixels).anomaly_map, loaded(pixels.float() / 255).anomaly_map)


def test_a_wrong_input_size_is_refused(composed, tmp_path):
    run = composed("model=hfr", "data.image_size=32", "backbone.weights=none", "category=brick")
    model = untrained(run)
    for fmt, name in (("onnx", "model.onnx"), ("torchscript", "model.pt")):
        export_model(model, run, fmt, tmp_path / name, metadata(run, fmt, None, "none", tmp_path / "last.pt"))
    other = real_images(48, n=1)
    with pytest.raises(Exception, match="Expected: 32"):  # onnxruntime's own check of the graph's input
        run_onnx(tmp_path / "model.onnx", other)
    with pytest.raises(Exception, match=r"N×3×32×32 \(the training size\), got \[1, 3, 48, 48\]"):
        torch.jit.load(str(tmp_path / "model.pt"))(torch.from_numpy(other).permute(0, 3, 1, 2))
    for name in ("model.onnx", "model.pt"):
        with pytest.raises(ConfigError, match=r"takes RGB images N×3×32×32 .* got \(1, 3, 48, 48\)"):
            load_exported(tmp_path / name)(torch.from_numpy(other).permute(0, 3, 1, 2))


def test_a_grey_model_takes_rgb_and_converts_it_as_predict_does(composed, tmp_path):
    run = composed("model=hfr", "data=mnist5k", "data.grey_to_rgb=false", "data.image_size=32", "backbone.weights=none")
    model = untrained(run)
    path = tmp_path / "model.onnx"
    export_model(model, run, "onnx", path, metadata(run, "onnx", None, "none", tmp_path / "last.pt"))
    images = real_images(32)
    assert_matches(*run_onnx(path, images), expected_output(model, images, grey=True))


class ReadsAValue(AnomalyModel):
    """``predict`` turns an input value into a Python number: a traced graph keeps the example's."""

    def predict(self, image):
        image = image * float(image[0, 0, 0, 0])
        return AnomalyOutput(anomaly_map=image[:, 0], score=image.flatten(1).amax(1))


def test_an_export_that_does_not_reproduce_predict_is_refused_and_removed(composed, tmp_path):
    run = composed("model=hfr", "data.image_size=32", "backbone.weights=none", "category=brick")
    path = tmp_path / "model.pt"
    with pytest.raises(ExportError, match="does not reproduce predict"):
        export_model(ReadsAValue(), run, "torchscript", path, {"image_size": 32})
    assert list(tmp_path.iterdir()) == []


class GivesNaN(AnomalyModel):
    """``predict`` of a model whose weights hold NaN: every map and score NaN."""

    def predict(self, image):
        image = image * float("nan")
        return AnomalyOutput(anomaly_map=image[:, 0], score=image.flatten(1).amax(1))


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_that_gives_nan_is_refused_and_removed(composed, tmp_path, fmt):
    run = composed("model=hfr", "data.image_size=32", "backbone.weights=none", "category=brick")
    path = tmp_path / f"model{'.onnx' if fmt == 'onnx' else '.pt'}"
    with pytest.raises(ExportError, match="gives NaN/inf in its anomaly_map"):
        export_model(GivesNaN(), run, fmt, path, {"image_size": 32})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_an_export_interrupted_before_its_check_ends_leaves_no_file(composed, tmp_path, monkeypatch, fmt):
    """As a kill or Ctrl-C while the file is checked: no file under the final name, checked or not."""
    run = composed("model=hfr", "data.image_size=32", "backbone.weights=none", "category=brick")
    path = tmp_path / f"model{'.onnx' if fmt == 'onnx' else '.pt'}"

    def interrupted(exported, core, size):
        assert exported.path == path  # the check's messages name the file by its final name
        raise KeyboardInterrupt

    monkeypatch.setattr(deploy, "check_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_model(untrained(run), run, fmt, path, {"image_size": 32})
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    export_model(untrained(run), run, fmt, path, {"image_size": 32})
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, f"{path.name}.json"]


def test_a_full_disk_during_an_export_leaves_no_truncated_file(composed, tmp_path, monkeypatch):
    run = composed("model=hfr", "data.image_size=32", "backbone.weights=none", "category=brick")
    path = tmp_path / "model.pt"

    def half_then_full(module, target, *args, **kwargs):
        Path(target).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.jit, "save", half_then_full)
    with pytest.raises(OSError) as raised:
        export_model(untrained(run), run, "torchscript", path, {"image_size": 32})
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(path)  # the one-line message's file
    assert list(tmp_path.iterdir()) == []


def test_utad_without_detail_guidance_says_why_it_cannot_be_exported(composed, tmp_path):
    run = composed(
        "model=utad",
        "data.image_size=64",
        "backbone=tf_efficientnet_lite0",
        "backbone.weights=none",
        "model.use_detail=false",
    )
    with pytest.raises(ExportError, match="use_detail=false .* random codes"):
        export_model(untrained(run), run, "torchscript", tmp_path / "model.pt", {})
    assert not (tmp_path / "model.pt").exists()


def test_onnx_missing_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when not installed
    with pytest.raises(ConfigError, match=r"onnxruntime, not installed: pip install 'anomalib_lite\[export\]'"):
        require_onnx()


def test_a_run_without_evaluation_has_no_threshold_and_says_why(tmp_path):
    checkpoint = tmp_path / "run" / "checkpoints" / "brick" / "last.pt"
    metrics = tmp_path / "run" / "metrics.json"
    assert stored_threshold(checkpoint, "brick") == (None, f"none: no {metrics} (the run was not evaluated)")
    metrics.parent.mkdir()
    metrics.write_text('{"categories": {"brick": {"image_threshold": null}}}')  # one class in the test split
    value, note = stored_threshold(checkpoint, "brick")
    assert value is None and "no image_threshold for brick" in note
    metrics.write_text('{"categories": {"brick": {"image_threshold": 0.25}}}')
    assert stored_threshold(checkpoint, "brick")[0] == 0.25


@pytest.mark.slow
def test_predict_on_an_exported_file_equals_predict_on_the_checkpoint(tmp_path):
    base = tmp_path / "hfr"
    run = base / "run"
    result = run_entry("train.py", *TINY, "category=brick", f"data.root={base / 'data'}", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-2000:]
    checkpoint = run / "checkpoints" / "brick" / "last.pt"
    images = base / "data" / "brick" / "test"
    outputs = {}
    for fmt in ("onnx", "torchscript"):
        result = run_entry("export.py", f"ckpt_path={checkpoint}", f"format={fmt}", f"hydra.run.dir={tmp_path / fmt}")
        assert result.returncode == 0, result.stderr[-2000:]
    for name, source in (
        ("checkpoint", checkpoint),
        ("onnx", tmp_path / "onnx" / "model.onnx"),
        ("torchscript", tmp_path / "torchscript" / "model.pt"),
    ):
        out = tmp_path / f"predict_{name}"
        result = run_entry(
            "predict.py", f"ckpt_path={source}", f"input={images}", "progress=false", f"hydra.run.dir={out}"
        )
        assert result.returncode == 0, result.stderr[-2000:]
        outputs[name] = out
    reference = list(csv.DictReader((outputs["checkpoint"] / "scores.csv").open()))
    scale = max(abs(float(row["score"])) for row in reference)
    for name in ("onnx", "torchscript"):
        rows = list(csv.DictReader((outputs[name] / "scores.csv").open()))
        assert [row["file"] for row in rows] == [row["file"] for row in reference]
        assert [row["anomalous"] for row in rows] == [row["anomalous"] for row in reference] != [""] * len(rows)
        for row, ref in zip(rows, reference):
            assert abs(float(row["score"]) - float(ref["score"])) <= 1e-5 * scale + 1e-6  # scores.csv keeps 6 digits
            relative = row["file"].removeprefix(f"{images}/")
            got, want = (np.load(outputs[n] / "maps" / f"{relative}.npy") for n in (name, "checkpoint"))
            assert np.abs(got - want).max() <= TOLERANCE * np.abs(want).max()


def test_export_py_refuses_an_unknown_format_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = run_entry("export.py", f"ckpt_path={tmp_path / 'last.pt'}", "format=tflite", f"hydra.run.dir={out}")
    assert result.returncode == 1 and "format=tflite; choices: onnx, torchscript" in result.stderr + result.stdout
    assert not out.exists()
