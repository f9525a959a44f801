"""metrics.json records what really ran; paper experiments stop without the paper's backbone unless allowed."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from anomalib_lite.data import DataConfig
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.backbones import BackboneConfig, cached_or_offline
from anomalib_lite.models.hfr.config import HFRConfig
from anomalib_lite.pipeline.evaluation import evaluate_checkpoint
from anomalib_lite.pipeline.setting import git_commit
from anomalib_lite.pipeline.training import run_config, train_run
from anomalib_lite.research.reproduce.results import setting_differences

from conftest import REPO, TINY, write_mvtec_category


def train(tmp_path, *overrides):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch")}  # no cached torchvision weights
    return subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "+experiment=hfr_mvtec",
            "data=synthetic",
            "category=brick",
            f"data.root={tmp_path / 'data'}",
            *TINY,
            "eval.n_maps=0",
            *overrides,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )


def test_an_uncached_paper_backbone_stops_unless_a_stand_in_is_allowed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    paper = BackboneConfig(name="wide_resnet50_2", allow_stand_in=False)
    with pytest.raises(ConfigError, match=r"prepare_data\.py weights --name wide_resnet50_2"):
        cached_or_offline(paper, "tf_efficientnet_lite0")
    allowed = cached_or_offline(BackboneConfig(name="wide_resnet50_2"), "tf_efficientnet_lite0")
    assert allowed.name == "tf_efficientnet_lite0" and allowed.stand_in_for == "wide_resnet50_2"


def test_the_experiment_stops_before_any_work_with_the_fetch_command(tmp_path):
    result = train(tmp_path, f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode != 0
    assert "python scripts/prepare_data.py weights --name wide_resnet50_2" in result.stdout + result.stderr
    assert "backbone.allow_stand_in=true" in result.stdout + result.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "data").exists()


def test_metrics_json_records_the_setting_and_scores_are_saved_per_image(tmp_path):
    run = tmp_path / "run"
    result = train(tmp_path, "backbone.allow_stand_in=true", "seed=3", f"hydra.run.dir={run}")
    assert result.returncode == 0, result.stderr[-3000:]
    content = json.loads((run / "metrics.json").read_text())
    setting = content["setting"]
    assert setting["backbone"] == {
        "requested": "wide_resnet50_2",
        "used": "tf_efficientnet_lite0",
        "stand_in": True,
        "weights": "imagenet",
        "layers": None,
    }
    assert setting["dataset"] == "synthetic" and setting["categories"] == ["brick"]
    assert setting["image_size"] == 64 and setting["map_size"] == 64 and setting["precision"] == "fp32"
    assert setting["seed"] == 3 and setting["device"] == "cpu"
    assert setting["schedule"]["brick"][0]["epochs"] == 1 and setting["schedule"]["brick"][0]["steps"] == 2
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?|unknown", setting["commit"])
    with (run / "scores" / "brick.csv").open() as f:
        rows = list(csv.DictReader(f))
    labels, scores = np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])
    assert len(rows) == 4 + 4 * 2 and all(r["path"].endswith(".png") for r in rows)
    assert roc_auc_score(labels, scores) == pytest.approx(content["categories"]["brick"]["image_auroc"], abs=1e-6)


def test_the_commit_is_unknown_outside_a_git_checkout(tmp_path):
    assert git_commit(tmp_path) == "unknown"
    assert re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", git_commit(REPO))


def test_a_reevaluated_run_records_the_same_setting_as_its_training(tmp_path):
    """eval.py writes the setting (so reproduce.py can compare a re-evaluated run), the same as training's but
    for what the command changes (here the AUPRO FPR limit)."""
    root = tmp_path / "mvtec"
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(0))
    config = {
        "task_name": "hfr_mvtec",
        "seed": 0,
        "category": "widget",
        "model": {**HFRConfig(epochs=1, conv_blocks=1).__dict__},
        "backbone": {"name": "resnet18", "weights": "none"},
        "data": {**DataConfig(root=str(root), category="widget", image_size=64, batch_size=2).__dict__},
        "trainer": {"device": "cpu", "progress": False},
        "eval": {"n_maps": 0, "curves": False},
    }
    run, stored = run_config(OmegaConf.create(config))
    trained = train_run(run, stored, tmp_path / "run")

    (tmp_path / "eval").mkdir()  # the command's run folder, made by Hydra
    again = evaluate_checkpoint(
        tmp_path / "run" / "checkpoints" / "widget" / "last.pt",
        {"data": {}, "eval": {"fpr_limit": 0.1}, "model": {}},
        torch.device("cpu"),
        tmp_path / "eval",
        progress=False,
    )
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())["setting"]
    assert written == again["setting"] and written["schedule"] == trained["setting"]["schedule"]
    assert setting_differences(trained["setting"]["compared"], written["compared"]) == [
        "eval.fpr_limit 0.1 (paper: 0.3)"
    ]
