"""Resume in the middle of a stage, for every family: a run killed mid-epoch and resumed from its last
checkpoint ends with the same weights, buffers and metrics, bit for bit on CPU, as a run never stopped.

Each case stops inside a stage whose state goes beyond the weights: HFR's SGD momentum, MSFI's
module weight search (a second stage on the validation split, its weights recorded each epoch),
IGD's E-step (the Gaussian descriptor's μ and σ² refitted every ``estep_every`` epochs) and its
polynomial learning-rate schedule, UTAD's Expert-Net (the second stage, after the IE-Net).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from anomalib_lite.data import DataConfig, build_datamodule
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.metrics import collect_predictions, compute_metrics
from anomalib_lite.models import BackboneConfig, build_model
from anomalib_lite.models.hfr import HFRConfig
from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.models.msfi.config import MSFIConfig, WeightSearchConfig
from anomalib_lite.models.utad.config import UTADConfig
from anomalib_lite.pipeline.evaluation import hold_out_validation

from conftest import killed_at, write_mvtec_category

RANDOM_RESNET = BackboneConfig(name="resnet18", weights="none")
CASES = {
    # family: (model config, backbone, the stage to stop in, the epoch it dies in (from 1), its epochs)
    "hfr": (HFRConfig(epochs=3, conv_blocks=1), RANDOM_RESNET, "reconstruction", 2),
    "msfi": (
        MSFIConfig(
            scales=[32, 64],
            epochs=1,
            weight_search=WeightSearchConfig(enabled=True, method="calibrated", epochs=3, keep_k=3, val_fraction=0.4),
        ),
        RANDOM_RESNET,
        "weight_search",
        3,
    ),
    "igd": (
        IGDConfig(
            image_size=64,
            epochs=4,
            estep_every=2,
            kd_steps=0,
            width=8,
            hidden=32,
            latent=8,
            patch_stride=32,
            patches_per_image=2,
        ),
        RANDOM_RESNET,
        "global",
        4,
    ),  # fmt: skip
    "utad": (
        UTADConfig(image_size=64, ie_epochs=1, ie_warmup_epochs=0, expert_epochs=3, latent=16),
        BackboneConfig(name="tf_efficientnet_lite0", weights="none"),
        "expert_net",
        2,
    ),
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    for sub in ("train/good", "test/good", "test/spot", "ground_truth/spot"):
        (root / "widget" / sub).mkdir(parents=True)
    write_mvtec_category(root, "widget", np.random.default_rng(1))
    return root


def _datamodule(root: Path, model, batch_size: int) -> object:
    datamodule = build_datamodule(DataConfig(root=str(root), image_size=64, batch_size=batch_size), "widget")
    hold_out_validation(model, datamodule)
    return datamodule


def _train(family: str, root: Path, path: Path, kill: tuple[str, int] | None = None, resume: bool = False):
    cfg, backbone, *_ = CASES[family]
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(cfg), backbone)
    if resume:  # other trainable weights than the first run's: whatever resume does not restore would show
        with torch.no_grad():
            for parameter in model.parameters():
                if parameter.requires_grad:
                    parameter.add_(0.1 * torch.randn_like(parameter))
    datamodule = _datamodule(root, model, batch_size=1 if family == "msfi" else 2)  # MSFI: 2 validation steps
    if kill is not None:
        killed_at(model, *kill)
    engine = Engine(
        TrainerConfig(progress=False, device="cpu", resume=resume, checkpoint_every=1), 11, path, {"family": family}
    )
    engine.fit(model, datamodule)
    return model, datamodule


def _metrics(model, datamodule) -> dict:
    return compute_metrics(collect_predictions(model, datamodule.test_loader(), torch.device("cpu"), progress=False))


@pytest.mark.parametrize(
    "family", ["hfr", "msfi", "igd", pytest.param("utad", marks=pytest.mark.slow)]
)  # UTAD: ~20-40 s
def test_a_run_killed_mid_stage_resumes_to_the_same_result(family, data_root, tmp_path):
    _, _, stage_name, dies_in = CASES[family]
    straight, datamodule = _train(family, data_root, tmp_path / "straight.pt")
    stage_names = [s.name for s in straight.stages()]
    steps_per_epoch = len(
        datamodule.validation_loader() if stage_name == "weight_search" else datamodule.train_loader()
    )
    assert steps_per_epoch >= 2

    with pytest.raises(KeyboardInterrupt):  # dies in the middle of epoch `dies_in` of the stage
        _train(family, data_root, tmp_path / "b.pt", kill=(stage_name, (dies_in - 1) * steps_per_epoch + 2))
    state = load_checkpoint(tmp_path / "b.pt")
    assert (state["stage"], state["epoch"], state["finished"]) == (stage_names.index(stage_name), dies_in - 1, False)

    resumed, datamodule = _train(family, data_root, tmp_path / "b.pt", resume=True)
    assert load_checkpoint(tmp_path / "b.pt")["finished"]
    expected, got = straight.state_dict(), resumed.state_dict()
    assert list(got) == list(expected)
    different = [name for name in expected if not torch.equal(expected[name], got[name])]
    assert not different, f"{family}: resumed state differs from the uninterrupted run in {different[:5]}"
    assert _metrics(resumed, datamodule) == _metrics(straight, datamodule)
