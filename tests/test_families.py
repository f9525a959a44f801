"""The contract every registered model family passes, on its own tiny setting (``AnomalyModel.tiny``): each
stage trains, ``predict`` gives maps at the input size and finite scores, the evaluator reports the shared
metrics and the ones the family declares, a checkpoint rebuilds the same model, a run killed inside its last
stage resumes to the same weights, buffers and metrics, bit for bit on CPU, and the trained model exports.

The last stages hold state beyond the weights, which resuming must restore: HFR's SGD momentum, MSFI's module
weight search (a stage on the validation split, its weights recorded each epoch), IGD's global model with its
E-step (the Gaussian descriptor's μ and σ² refitted after every epoch) and polynomial learning-rate schedule,
UTAD's Expert-Net (a second stage, on the frozen IE-Net).

A family declares what of the contract it supports (``AnomalyModel.capabilities``), each exception with its reason,
and the tests check what applies instead of skipping silently: a family that needs an optional package is skipped,
naming the extra, where that package is absent (the anomalib baselines); a fitting stage (``Stage.optimizer``
``None``: a memory bank) must change the model's state instead of moving parameters; a family whose last stage is a
single pass (``resumes_inside_last_stage=False``) is killed inside that pass and must rerun it to the same state;
a family whose tiny setting takes minutes on a CPU (``slow_reason``) has its tests marked slow; a family that cannot
be exported (``export_refusal``) must be refused by the exporter with its reason; a family
chosen through a shared config file names it (``config_group``).

A toy family, a toy dataset and a toy metric, defined in this file only, go through the same contract and
through a whole training run: what a newcomer adds needs no edit anywhere else.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf
from torch import nn

from anomalib_lite.configs import CONFIG_DIR
from anomalib_lite.data import DataConfig, DataModule, Dataset, ImageSet, build_datamodule, register_dataset
from anomalib_lite.data import registry as data_registry
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.engine.device import place_model
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.metrics import collect_predictions, compute_metrics
from anomalib_lite.metrics.catalogue import METRICS, Metric, register_metric
from anomalib_lite.models import registry as model_registry
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.registry import build_model, model_class, model_names, register_model
from anomalib_lite.pipeline.config import EvalConfig, plain_config, validate
from anomalib_lite.pipeline.deploy import ExportError, export_model, load_exported, metadata
from anomalib_lite.pipeline.evaluation import evaluate_category, hold_out_validation
from anomalib_lite.pipeline.inference import load_trained
from anomalib_lite.pipeline.training import run_config, train_run
from anomalib_lite.reporting.tables import format_table

from conftest import killed_at, write_mvtec_category

CPU = torch.device("cpu")


# A new family, written as a newcomer would: its config, its network, its stages and predict.
@dataclasses.dataclass
class ToyConfig:
    """A 1×1-conv autoencoder on the raw image."""

    name: str = "toy"
    epochs: int = 2
    lr: float = 0.05


class Toy(AnomalyModel):
    """Reconstructs each pixel's colour through a 1-channel bottleneck; map = squared reconstruction error."""

    def __init__(self, cfg: ToyConfig, backbone: BackboneConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Conv2d(1, 3, 1))

    @classmethod
    def tiny(cls) -> TinySetting:
        return TinySetting(ToyConfig(epochs=2), BackboneConfig(name="tf_efficientnet_lite0", weights="none"))

    def stages(self) -> list[Stage]:
        def step(batch: dict) -> dict[str, torch.Tensor]:
            image = batch["image"]
            return {"loss": ((self.net(image) - image) ** 2).mean()}

        parameters = list(self.net.parameters())
        return [Stage("fit", self.cfg.epochs, parameters, lambda p: torch.optim.SGD(p, lr=self.cfg.lr), step)]

    def reported_metrics(self) -> dict[str, dict[str, Any]]:
        return {"toy_mean_score": {}}

    def predict(self, image: torch.Tensor) -> AnomalyOutput:
        anomaly_map = ((self.net(image) - image) ** 2).mean(1)
        return AnomalyOutput(anomaly_map, anomaly_map.flatten(1).amax(1))


# A new dataset: bright squares on grey noise, made in memory.
@dataclasses.dataclass
class ToyDataConfig(DataConfig):
    name: str = "toy_data"
    root: str = "(in memory)"
    category: Any = "squares"
    n_train: int = 8


class ToyData(Dataset):
    def categories(self, cfg: ToyDataConfig) -> list[str]:
        return self.requested(cfg, ["squares"])

    def datamodule(self, cfg: ToyDataConfig, category: str) -> DataModule:
        rng = np.random.default_rng(0)
        size = cfg.image_size

        def images(n: int, defect: bool) -> np.ndarray:
            out = (120 + rng.normal(0, 8, (n, size, size, 3))).clip(0, 255).astype(np.uint8)
            if defect:
                out[:, size // 4 : size // 2, size // 4 : size // 2] = 250
            return out

        train = ImageSet.from_arrays(images(cfg.n_train, False), [0] * cfg.n_train, ["train/good/x"] * cfg.n_train)
        test_images = np.concatenate([images(4, False), images(4, True)])
        names = [f"test/{'good' if i < 4 else 'square'}/{i}" for i in range(8)]
        test = ImageSet.from_arrays(test_images, [0] * 4 + [1] * 4, names)
        return DataModule(train, test, cfg.batch_size, cfg.num_workers, f"{cfg.name}/{category}")


def _toy_mean_score(pred, **options) -> dict[str, Any]:
    return {"toy_mean_score": float(pred.scores.mean())}


@pytest.fixture
def toy_parts():
    """Registers the toy family, dataset and metric for one test, and removes them after it."""
    register_model("toy", ToyConfig)(Toy)
    register_dataset("toy_data", ToyDataConfig)(ToyData)
    register_metric(Metric("toy_mean_score", "mean image score", compute=_toy_mean_score))
    yield
    del model_registry._MODELS["toy"], data_registry._DATASETS["toy_data"], METRICS["toy_mean_score"]


FAMILIES = [
    pytest.param(name, marks=pytest.mark.slow) if model_class(name).capabilities().slow_reason else name
    for name in model_names()
] + ["toy"]


@pytest.fixture(params=FAMILIES)
def family(request) -> str:
    if request.param == "toy":
        request.getfixturevalue("toy_parts")
    requires = model_class(request.param).capabilities().requires
    if requires and importlib.util.find_spec(requires[0]) is None:
        pytest.skip(f"{request.param} needs {requires[0]}, not installed: pip install '{requires[1]}'")
    return request.param


@pytest.fixture(scope="module")
def widget_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("families")
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(3))
    return root


def tiny_run(name: str, root: Path) -> dict[str, Any]:
    """The plain run config of family ``name``'s tiny setting on the ``widget`` category (as a checkpoint stores)."""
    setting = model_class(name).tiny()
    data = DataConfig(
        name="mvtec", root=str(root), category="widget", image_size=setting.image_size, batch_size=setting.batch_size
    )
    return {
        "task_name": f"{name}_tiny",
        "seed": 0,
        "category": "widget",
        "model": dataclasses.asdict(setting.model),
        "backbone": dataclasses.asdict(setting.backbone),
        "data": dataclasses.asdict(data),
        "trainer": dataclasses.asdict(TrainerConfig(device="cpu", progress=False, checkpoint_every=1)),
        "eval": dataclasses.asdict(EvalConfig(n_maps=0, curves=False)),
    }


def fit(name: str, root: Path, path: Path, kill: tuple[str, int] | None = None, resume: bool = False):
    """Train family ``name``'s tiny setting with the engine, checkpointing to ``path``; ``kill``: (stage, step)
    at which the process dies."""
    config = tiny_run(name, root)
    run, _ = run_config(OmegaConf.create(config))
    torch.manual_seed(0)
    model = build_model(run.model, run.backbone)
    datamodule = build_datamodule(run.data, "widget")
    hold_out_validation(model, datamodule)
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    if kill is not None:
        killed_at(model, *kill)
    trainer = dataclasses.replace(run.trainer, resume=resume)
    Engine(trainer, run.seed, path, config).fit(model, datamodule)
    return model, datamodule, initial, run


@pytest.fixture(scope="module")
def trained(widget_root, tmp_path_factory):
    """``trained(family)``: :func:`fit`'s result and checkpoint for ``family``'s uninterrupted run, trained once for
    the module (the tests only read it)."""
    runs: dict[str, tuple] = {}

    def get(family: str) -> tuple:
        if family not in runs:
            path = tmp_path_factory.mktemp(family) / "last.pt"
            runs[family] = (*fit(family, widget_root, path), path)
        return runs[family]

    return get


def test_every_family_trains_each_stage_and_is_evaluated(family, trained):
    model, datamodule, initial, run, _ = trained(family)
    names = {id(p): n for n, p in model.named_parameters()}
    for stage in model.stages():
        if stage.optimizer is None:  # a fitting stage: no parameter to move; it must fit some state
            state = model.state_dict()
            fitted = [key for key, value in state.items() if not _same(initial.get(key), value)]
            assert not stage.parameters and fitted, f"{family}: fitting stage {stage.name} changed nothing"
            continue
        moved = [names[id(p)] for p in stage.parameters if not torch.equal(initial[names[id(p)]], p.detach())]
        assert moved, f"{family}: stage {stage.name} changed none of its parameters"

    model.eval()
    batch = torch.stack([datamodule.test_set[i]["image"] for i in range(3)])
    with torch.inference_mode():
        out = model.predict(batch)
    side = run.data.image_size
    assert out.anomaly_map.shape == (3, side, side) and out.score.shape == (3,)
    assert torch.isfinite(out.anomaly_map).all() and torch.isfinite(out.score).all()

    metrics = evaluate_category(model, datamodule, CPU, run.eval, progress=False)[0].metrics
    expected = [name for name, metric in METRICS.items() if metric.always] + list(model.reported_metrics())
    assert all(isinstance(metrics[name], float) for name in expected), metrics


def test_every_family_rebuilds_from_its_checkpoint_and_exports(family, trained, tmp_path, monkeypatch):
    # IGD predicts its patches in chunks: small ones here, so that the traced batch (and the checked one) spans
    # several, as at 256 px; a traced split would replay the example's number of chunks.
    monkeypatch.setattr("anomalib_lite.models.igd.model.CHUNK", 4)
    model, datamodule, _, _, checkpoint = trained(family)
    run, loaded = load_trained(checkpoint)
    model.eval()
    place_model(loaded, CPU, run.trainer.channels_last).eval()  # the layout training used: the same kernels
    test = datamodule.test_set  # what a validation stage left of it: 4 images or more
    images = torch.stack([test[i]["image"] for i in range(len(test))])
    with torch.inference_mode():
        expected, got = model.predict(images), loaded.predict(images)
    assert torch.equal(expected.anomaly_map, got.anomaly_map) and torch.equal(expected.score, got.score)

    pixels = test.images.permute(0, 3, 1, 2)  # uint8 RGB, what an exported file takes
    for fmt, name in (("torchscript", "model.pt"), ("onnx", "model.onnx")):
        info = metadata(run, fmt, None, "none", checkpoint)
        refusal = loaded.export_refusal()
        if refusal:  # declared: the exporter refuses it with its reason, and writes nothing
            with pytest.raises(ExportError, match="cannot be exported"):
                export_model(loaded, run, fmt, tmp_path / name, info)
            assert not (tmp_path / name).exists()
            continue
        sidecar = export_model(loaded, run, fmt, tmp_path / name, info)
        assert json.loads(sidecar.read_text())["model"]["family"] == family
        out = load_exported(tmp_path / name, CPU)(pixels)
        for value, reference in ((out.anomaly_map, expected.anomaly_map), (out.score, expected.score)):
            scale = float(reference.abs().max())
            assert torch.allclose(torch.as_tensor(value), reference, atol=1e-4 * scale, rtol=0), (family, fmt)


def test_every_family_resumes_inside_its_last_stage_to_the_same_weights(family, trained, widget_root, tmp_path):
    straight, datamodule, *_ = trained(family)
    last = straight.stages()[-1]
    loader = datamodule.validation_loader() if last.split == "validation" else datamodule.train_loader()
    assert len(loader) >= 2
    stages = len(straight.stages())
    if model_class(family).capabilities().resumes_inside_last_stage:
        with pytest.raises(KeyboardInterrupt):  # at the second step of the last stage's second epoch
            fit(family, widget_root, tmp_path / "killed.pt", kill=(last.name, len(loader) + 2))
        state = load_checkpoint(tmp_path / "killed.pt")
        assert (state["stage"], state["epoch"], state["finished"]) == (stages - 1, 1, False)
    else:  # a single pass (capabilities' reason): killed inside it, it has no checkpoint of its own to resume from
        with pytest.raises(KeyboardInterrupt):  # at the second step of the last stage's only epoch
            fit(family, widget_root, tmp_path / "killed.pt", kill=(last.name, 2))
        if stages == 1:  # no stage finished: train.py starts it afresh (trainer.resume needs a checkpoint)
            assert not (tmp_path / "killed.pt").exists()
        else:
            state = load_checkpoint(tmp_path / "killed.pt")
            assert (state["stage"], state["epoch"], state["finished"]) == (stages - 2, state["epoch"], False)
    resumed, *_ = fit(family, widget_root, tmp_path / "killed.pt", resume=(tmp_path / "killed.pt").exists())
    assert load_checkpoint(tmp_path / "killed.pt")["finished"]
    expected, got = straight.state_dict(), resumed.state_dict()
    assert list(got) == list(expected)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{family}: the resumed run differs in {different[:5]}"
    assert _metrics(resumed, datamodule) == _metrics(straight, datamodule)


def _same(before: torch.Tensor | None, after: torch.Tensor) -> bool:
    """Whether a state tensor is unchanged (a memory bank that grew from empty has changed)."""
    return before is not None and before.shape == after.shape and torch.equal(before, after)


def _metrics(model: AnomalyModel, datamodule: DataModule) -> dict[str, Any]:
    return compute_metrics(collect_predictions(model, datamodule.test_loader(), CPU, progress=False))


def test_every_family_has_its_config_group():
    for name in model_names():
        shared = model_class(name).capabilities().config_group  # e.g. model=anomalib model.name=<name>
        group = OmegaConf.load(CONFIG_DIR / "model" / f"{shared or name}.yaml")
        if shared is None:
            assert group.name == name
            continue
        # one file for several families: its default is one of them, and model.name picks each
        assert model_class(group.name).capabilities().config_group == shared
        GlobalHydra.instance().clear()
        with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
            config = compose("train", overrides=[f"model={shared}", f"model.name={name}"])
        assert validate(config).model.name == name


def test_a_toy_family_dataset_and_metric_need_no_edit_elsewhere(toy_parts, tmp_path):
    """A whole run through the library (validation, training, evaluation, metrics.json, the table) with the
    three toy parts, each registered from this file alone."""
    setting = Toy.tiny()
    config = OmegaConf.create(
        {
            "task_name": "toy_toy_data",
            "seed": 0,
            "category": "squares",
            "model": dataclasses.asdict(setting.model),
            "backbone": dataclasses.asdict(setting.backbone),
            "data": dataclasses.asdict(ToyDataConfig(image_size=32, batch_size=4)),
            "trainer": {"device": "cpu", "progress": False},
            "eval": {"n_maps": 2},
        }
    )
    run, stored = run_config(config)
    assert stored == plain_config(config) and run.data.n_train == 8
    results = train_run(run, stored, tmp_path)
    metrics = results["categories"]["squares"]
    assert metrics["toy_mean_score"] == pytest.approx(float(np.mean(_scores(tmp_path / "scores" / "squares.csv"))))
    assert metrics["image_auroc"] > 0.9  # a bright square is far from the grey it learnt to rebuild
    assert "toy_mean_score" in format_table(results["categories"]).splitlines()[0]
    assert (tmp_path / "report.html").is_file() and "mean image score" in (tmp_path / "report.html").read_text()


def _scores(path: Path) -> list[float]:
    with path.open() as file:
        return [float(row["score"]) for row in csv.DictReader(file)]
