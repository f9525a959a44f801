"""Lean checkpoints: no frozen weights, a fingerprint checked on load, written on schedule."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from anomalib_lite.cli.run_folders import WRITE_ERRNOS, output_error_message
from anomalib_lite.engine.checkpoint import (
    CheckpointWriter,
    frozen_record,
    lean_state,
    load_checkpoint,
    load_model_state,
    save_checkpoint,
)
from anomalib_lite.engine.device import place_model
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.errors import TrainingError, WeightsError
from anomalib_lite.models import BackboneConfig, build_model
from anomalib_lite.models.backbones import Backbone, weight_fingerprint
from anomalib_lite.models.hfr.config import HFRConfig

from conftest import TINY, run_entry, small_disk, tiny_datamodule

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


class FillsUp:
    """A binary file on a disk with ``free`` bytes left: a write beyond them writes what fits, then fails with
    ENOSPC (as ``write(2)`` on a full disk)."""

    def __init__(self, file: io.BufferedWriter, free: int) -> None:
        self.file, self.free = file, free

    def write(self, data: bytes) -> int:
        if len(data) > self.free:
            self.file.write(bytes(memoryview(data)[: self.free]))
            self.free = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.free -= len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()

    def __enter__(self) -> FillsUp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.file.close()


def test_a_full_disk_during_a_checkpoint_write_names_the_file_and_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "model": {"w": torch.ones(100_000)}}, path)
    before = path.read_bytes()
    real_open = Path.open

    def full_disk_open(self: Path, *args, **kwargs):
        file = real_open(self, *args, **kwargs)
        return FillsUp(file, free=2000) if ".partial-" in self.name else file

    monkeypatch.setattr(Path, "open", full_disk_open)
    with pytest.raises(OSError) as raised:  # torch alone says "RuntimeError: [enforce fail at inline_container.cc…"
        save_checkpoint({"epoch": 2, "model": {"w": torch.zeros(100_000)}}, path)
    assert raised.value.errno == errno.ENOSPC and raised.value.errno in WRITE_ERRNOS  # report_errors: one line
    assert output_error_message(raised.value, tmp_path).startswith(f"Cannot write {path}: No space left on device.")
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_disk_that_fills_up_during_training_gives_one_line_and_keeps_the_last_checkpoint(tmp_path):
    """On a real full disk: the first checkpoint (3.6 MB) fits on 5 MB, the second epoch's does not (an atomic
    write needs room for both)."""
    with small_disk(tmp_path / "disk", "5m") as disk:
        run = disk / "run"
        overrides = ["trainer.max_epochs=2", "trainer.checkpoint_every=1", f"data.root={tmp_path / 'data'}"]
        result = run_entry("train.py", *TINY, "category=brick", *overrides, f"hydra.run.dir={run}")
        output = result.stdout + result.stderr
        checkpoint = run / "checkpoints" / "brick" / "last.pt"
        assert result.returncode == 1, output[-2000:]
        assert f"Cannot write {checkpoint}: No space left on device." in output
        assert "Traceback" not in output and "inline_container" not in output
        assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
        assert not [p for p in run.rglob("*") if ".partial-" in p.name]
