"""Bad inputs to eval.py, predict.py and export.py: damaged or foreign checkpoints, NaN weights, bad options."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from anomalib_lite.engine.checkpoint import frozen_record, lean_state, save_checkpoint
from anomalib_lite.errors import WeightsError
from anomalib_lite.models import build_model
from anomalib_lite.pipeline.config import plain_config, validate
from anomalib_lite.pipeline.inference import load_scorer, load_trained

from conftest import REPO

CPU = torch.device("cpu")


def write_checkpoint(path: Path, poison: str | None = None) -> Path:
    """A checkpoint as training writes it (HFR, random backbone, 32 px, untrained), its tensor ``poison`` NaN."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        cfg = compose("train", overrides=["model=hfr", "backbone.weights=none", "data.image_size=32", "category=brick"])
    GlobalHydra.instance().clear()
    run = validate(cfg)
    model = build_model(run.model, run.backbone)
    frozen = frozen_record(model)
    state = lean_state(model, frozen)
    if poison is not None:
        state[poison] = state[poison].clone()
        state[poison].view(-1)[0] = float("nan")
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint({"model": state, "frozen": frozen, "config": plain_config(cfg)}, path)
    return path


@pytest.fixture(scope="module")
def nan_bias(tmp_path_factory) -> tuple[Path, str]:
    """A checkpoint with one NaN in a bias, and that bias's name."""
    path = tmp_path_factory.mktemp("nan") / "last.pt"
    clean = write_checkpoint(path)
    name = next(key for key in torch.load(clean, weights_only=True)["model"] if key.endswith("bias"))
    return write_checkpoint(path, poison=name), name


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_file_and_the_tensors(nan_bias):
    path, name = nan_bias
    for load in (lambda: load_trained(path), lambda: load_scorer(path, CPU)):  # eval and export; predict
        with pytest.raises(WeightsError, match=rf"ckpt_path={path}: its weights hold NaN/inf in {name}\b"):
            load()


def test_a_sound_checkpoint_still_loads(tmp_path):
    scorer = load_scorer(write_checkpoint(tmp_path / "last.pt"), CPU)
    out = scorer.score(torch.zeros(2, 32, 32, 3, dtype=torch.uint8).numpy())
    assert out.score.shape == (2,) and torch.isfinite(out.score).all()
