"""Lean checkpoints: no frozen weights, a fingerprint checked on load, written on schedule."""

from __future__ import annotations

import hashlib
import io

import pytest
import torch
from torch import nn

from anomalib_lite.engine.checkpoint import (
    CheckpointWriter,
    frozen_record,
    lean_state,
    load_checkpoint,
    load_model_state,
)
from anomalib_lite.engine.device import place_model
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.errors import TrainingError, WeightsError
from anomalib_lite.models import BackboneConfig, build_model
from anomalib_lite.models.backbones import Backbone, weight_fingerprint
from anomalib_lite.models.hfr.config import HFRConfig

from conftest import tiny_datamodule

LITE0 = BackboneConfig("tf_efficientnet_lite0", weights="none")


def hfr() -> nn.Module:
    return build_model(HFRConfig(epochs=2, conv_blocks=1), LITE0)


def fit(model: nn.Module, path, **options) -> None:
    Engine(TrainerConfig(device="cpu", progress=False, **options), 0, path, {}).fit(model, tiny_datamodule())


def test_fingerprint_is_sha256_of_the_frozen_tensors():
    encoder = hfr().encoder
    digest = hashlib.sha256()
    for name, tensor in encoder.state_dict().items():  # the independent reference: numpy's bytes
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.numpy().tobytes())
    assert weight_fingerprint(encoder) == digest.hexdigest()


def test_random_backbone_weights_are_rebuilt_from_the_name_alone():
    state = torch.random.get_rng_state()
    a, b = Backbone("resnet18", weights="none"), Backbone("resnet18", weights="none")
    assert weight_fingerprint(a) == weight_fingerprint(b)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched


def test_a_checkpoint_holds_no_frozen_weights_and_is_smaller(tmp_path):
    model = hfr()
    fit(model, tmp_path / "last.pt", max_epochs=1)
    state = load_checkpoint(tmp_path / "last.pt")
    assert not [key for key in state["model"] if key.startswith("encoder.")]
    assert set(state["model"]) == {key for key in model.state_dict() if not key.startswith("encoder.")}
    assert state["frozen"] == {
        "encoder": {"network": "tf_efficientnet_lite0", "weights": "none", "sha256": weight_fingerprint(model.encoder)}
    }
    full = io.BytesIO()
    torch.save({**state, "model": model.state_dict()}, full)
    encoder_bytes = sum(t.numel() * t.element_size() for t in model.encoder.state_dict().values())
    assert (tmp_path / "last.pt").stat().st_size < full.getbuffer().nbytes - 0.9 * encoder_bytes


def test_a_shared_frozen_network_is_left_out_under_every_name():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = Backbone("resnet18", ["layer1"], weights="none")
            self.head = nn.Sequential()
            self.head.add_module("backbone", self.backbone)  # as IGD's global encoder holds its backbone
            self.head.add_module("out", nn.Linear(2, 2))
            self.tuned = Backbone("resnet18", ["layer1"], weights="none").requires_grad_(True)  # trains: kept

    model = Shared()
    record = frozen_record(model)
    assert sorted(record) == ["backbone", "head.backbone"]
    assert record["backbone"]["sha256"] == record["head.backbone"]["sha256"]
    kept = lean_state(model, record)
    assert {key.split(".")[0] for key in kept} == {"head", "tuned"} and "head.out.weight" in kept
    assert not [key for key in kept if key.startswith(("backbone.", "head.backbone."))]


def test_a_lean_checkpoint_resumes_to_the_uninterrupted_result(tmp_path):
    torch.manual_seed(0)
    straight = hfr()
    fit(straight, tmp_path / "a.pt")
    torch.manual_seed(0)
    fit(hfr(), tmp_path / "b.pt", max_epochs=1)
    resumed = hfr()  # other decoder weights: all come from the checkpoint
    fit(resumed, tmp_path / "b.pt", resume=True)
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    image = torch.randn(2, 3, 32, 32)
    loaded = hfr()
    load_model_state(loaded, load_checkpoint(tmp_path / "b.pt"), tmp_path / "b.pt")
    # placed as eval.py and predict.py place it: the layout training used (channels-last on the CPU)
    place_model(loaded, torch.device("cpu"), TrainerConfig().channels_last)
    maps = [m.eval().predict(image).anomaly_map for m in (straight, loaded)]
    torch.testing.assert_close(maps[0], maps[1], rtol=0, atol=0)


def test_an_optimiser_state_from_another_set_up_is_refused_and_the_checkpoint_kept(tmp_path):
    fit(hfr(), tmp_path / "last.pt", max_epochs=1)
    state = load_checkpoint(tmp_path / "last.pt")
    state["optimizer"]["param_groups"].append(dict(state["optimizer"]["param_groups"][0], params=[]))
    torch.save(state, tmp_path / "last.pt")
    before = (tmp_path / "last.pt").read_bytes()
    refusal = r"last\.pt: its optimiser or learning-rate schedule of stage 'reconstruction'"
    with pytest.raises(TrainingError, match=refusal):
        fit(hfr(), tmp_path / "last.pt", resume=True)
    assert (tmp_path / "last.pt").read_bytes() == before


def test_other_frozen_weights_are_refused_naming_both(tmp_path):
    fit(hfr(), tmp_path / "last.pt", max_epochs=1)
    state = load_checkpoint(tmp_path / "last.pt")
    model = hfr()
    with torch.no_grad():
        model.encoder.steps[0][0].weight[0, 0, 0, 0] += 1e-3
    stored, here = state["frozen"]["encoder"]["sha256"][:16], weight_fingerprint(model.encoder)[:16]
    pattern = rf"frozen network 'encoder' was tf_efficientnet_lite0 \(none weights, sha256 {stored}.*rebuilt.*{here}"
    with pytest.raises(WeightsError, match=pattern):
        load_model_state(model, state, tmp_path / "last.pt")
    with pytest.raises(WeightsError, match="frozen network 'encoder'"):
        fit(model, tmp_path / "last.pt", resume=True)


def test_writes_every_n_epochs_or_by_time_and_always_at_a_stage_end(tmp_path):
    every_two = CheckpointWriter(tmp_path / "a.pt", every=2, seconds=0)
    assert [every_two.due(epoch, stage_end=epoch == 5) for epoch in range(1, 6)] == [False, True, False, True, True]
    by_time = CheckpointWriter(tmp_path / "b.pt", every=None, seconds=3600)
    assert [by_time.due(epoch, stage_end=epoch == 3) for epoch in range(1, 4)] == [False, False, True]
    assert CheckpointWriter(tmp_path / "c.pt", every=None, seconds=0).due(1, stage_end=False)
    by_time.write({"x": torch.zeros(10)})
    by_time.write({"x": torch.zeros(10)})
    assert by_time.count == 2 and by_time.bytes == 2 * (tmp_path / "b.pt").stat().st_size
    assert not list(tmp_path.glob("*.partial-*"))
