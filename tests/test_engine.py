"""The engine: NaN detection (losses, gradients, weights), safe checkpoints, resume equal to an
uninterrupted run, and the lean step (no host read per step, channels-last, torch.compile)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from anomalib_lite.data import DataModule, ImageRecord
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.engine.device import channels_last_used, to_device
from anomalib_lite.engine.trainer import Engine, TrainerConfig, non_finite_state
from anomalib_lite.errors import TrainingError
from anomalib_lite.models.base import AnomalyModel, Stage


class Toy(AnomalyModel):
    """Two stages of a linear map on pooled pixels; ``poison_at`` makes a loss term NaN at that epoch."""

    def __init__(self, poison_at: int | None = None, stop_after: int | None = None) -> None:
        super().__init__()
        self.first, self.second = nn.Linear(3, 3), nn.Linear(3, 1)
        self.poison_at, self.stop_after, self.epoch, self.calls = poison_at, stop_after, 0, 0

    def step(self, batch):
        x = batch["image"].mean((2, 3))
        loss = (self.second(self.first(x)) ** 2).mean()
        extra = torch.tensor(float("nan")) if self.epoch == self.poison_at else loss.detach()
        return {"loss": loss, "extra": extra}

    def count(self, done: int) -> None:
        self.epoch, self.calls = done, self.calls + 1
        if self.calls == self.stop_after:
            raise KeyboardInterrupt  # stands in for a killed process

    def stages(self):
        sgd = lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9)  # noqa: E731
        return [
            Stage("one", 3, list(self.first.parameters()), sgd, self.step, on_epoch_end=self.count),
            Stage(
                "two",
                2,
                list(self.second.parameters()),
                sgd,
                self.step,
                scheduler=lambda opt, total: torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total),
                on_epoch_end=self.count,
            ),
        ]


@pytest.fixture(scope="module")
def datamodule(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    records = []
    for i in range(10):
        Image.fromarray(np.full((8, 8, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
        records.append(ImageRecord(folder / f"{i}.png", 0))
    return DataModule.from_records(records, records, 32, 3, name="toy")


def test_nan_loss_names_stage_epoch_and_term(tmp_path, datamodule):
    engine = Engine(TrainerConfig(progress=False), 0, tmp_path / "last.pt", {})
    with pytest.raises(TrainingError, match=r"stage 'one', epoch 2: term 'extra' = nan"):
        engine.fit(Toy(poison_at=1), datamodule)


def test_resume_continues_where_the_run_stopped(tmp_path, datamodule):
    torch.manual_seed(1)
    straight = Toy()
    Engine(TrainerConfig(progress=False), 7, tmp_path / "a.pt", {"k": 1}).fit(straight, datamodule)

    torch.manual_seed(1)
    interrupted = Toy(stop_after=4)  # dies at the end of stage "two"'s first epoch, before its checkpoint
    with pytest.raises(KeyboardInterrupt):
        Engine(TrainerConfig(progress=False), 7, tmp_path / "b.pt", {"k": 1}).fit(interrupted, datamodule)
    state = load_checkpoint(tmp_path / "b.pt")
    assert (state["stage"], state["epoch"], state["finished"]) == (0, 3, False)

    resumed = Toy()
    Engine(TrainerConfig(progress=False, resume=True), 7, tmp_path / "b.pt", {"k": 1}).fit(resumed, datamodule)
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-7)
    final = load_checkpoint(tmp_path / "b.pt")
    assert (final["stage"], final["epoch"], final["finished"], final["config"]) == (1, 2, True, {"k": 1})


def test_max_epochs_caps_every_stage(tmp_path, datamodule):
    Engine(TrainerConfig(progress=False, max_epochs=1), 0, tmp_path / "c.pt", {}).fit(Toy(), datamodule)
    state = load_checkpoint(tmp_path / "c.pt")
    assert (state["stage"], state["epoch"], state["finished"]) == (1, 1, True)


def test_checkpoint_holds_no_code(tmp_path, datamodule):
    Engine(TrainerConfig(progress=False, max_epochs=1), 0, tmp_path / "d.pt", {"a": [1, 2]}).fit(Toy(), datamodule)
    torch.load(tmp_path / "d.pt", weights_only=True)  # raises if anything but tensors and plain data
    assert not list(tmp_path.glob("*.partial-*"))


class NaNGradient(Toy):
    """From epoch ``bad_epoch`` on, a term with a finite value (0) but a NaN gradient for ``first.weight``."""

    def __init__(self, bad_epoch: int) -> None:
        super().__init__()
        self.bad_epoch = bad_epoch

    def step(self, batch):
        terms = super().step(batch)
        if self.epoch >= self.bad_epoch:
            terms["loss"] = terms["loss"] + (self.first.weight * 0).sqrt().sum()  # d√x at 0: inf · 0 = NaN
        return terms


def test_nan_gradient_with_finite_loss_stops_naming_the_parameter(tmp_path, datamodule):
    engine = Engine(TrainerConfig(progress=False, checkpoint_every=1), 0, tmp_path / "last.pt", {})
    with pytest.raises(
        TrainingError, match=r"Non-finite gradient in stage 'one', epoch 2 \(step 4\) of parameter\(s\) first\.weight\."
    ):
        engine.fit(NaNGradient(bad_epoch=1), datamodule)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["model"].values())


def test_nan_found_at_the_epoch_end_is_never_checkpointed(tmp_path, datamodule):
    # log_every > steps per epoch: the NaN loss of epoch 2 goes through backward and optimiser steps
    # (NaN weights) before the epoch-end check finds it; the first bad step is still the one named.
    engine = Engine(TrainerConfig(progress=False, log_every=1000, checkpoint_every=1), 0, tmp_path / "last.pt", {})
    with pytest.raises(TrainingError, match=r"stage 'one', epoch 2: term 'extra' = nan \(step 4\)"):
        engine.fit(Toy(poison_at=1), datamodule)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["model"].values())


class NaNBuffer(Toy):
    """A state refitted at the end of an epoch (like IGD's E-step) that turns NaN at epoch ``poison_at``."""

    def __init__(self, poison_at: int) -> None:
        super().__init__(poison_at=None)
        self.register_buffer("centre", torch.zeros(3))
        self.bad_epoch = poison_at

    def count(self, done: int) -> None:
        super().count(done)
        if done == self.bad_epoch:
            self.centre.fill_(float("nan"))


def test_non_finite_weights_are_not_checkpointed(tmp_path, datamodule):
    engine = Engine(TrainerConfig(progress=False, checkpoint_every=1), 0, tmp_path / "last.pt", {})
    with pytest.raises(TrainingError, match=r"Non-finite weights after stage 'one', epoch 2: centre; not checkpointed"):
        engine.fit(NaNBuffer(poison_at=2), datamodule)
    kept = load_checkpoint(tmp_path / "last.pt")
    assert kept["epoch"] == 1 and torch.isfinite(kept["model"]["centre"]).all()


def test_non_finite_state_names_every_tensor_with_nan_or_inf():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2).to(torch.bfloat16))
    model.register_buffer("empty", torch.zeros(0))
    assert non_finite_state(model) == []
    with torch.no_grad():
        model[0].weight[1, 2] = float("nan")
        model[1].running_var[0] = float("inf")
        model[2].bias[1] = float("-inf")
        model[2].weight.fill_(3e38)  # large but finite (bf16 holds it)
    assert non_finite_state(model) == ["0.weight", "1.running_var", "2.bias"]


def test_loss_terms_are_read_from_the_device_once_per_interval_not_per_step(tmp_path, datamodule, monkeypatch):
    reads = []

    def counted(original):
        def read(tensor, *args, **kwargs):
            if "site-packages" not in sys._getframe(1).f_code.co_filename:  # not torch's own sampler
                reads.append(sys._getframe(1).f_code.co_name)
            return original(tensor, *args, **kwargs)

        return read

    small = DataModule(datamodule.train_set, datamodule.test_set, batch_size=1, name="toy")  # 10 steps per epoch
    for name in ("item", "tolist", "__float__", "__bool__"):
        monkeypatch.setattr(torch.Tensor, name, counted(getattr(torch.Tensor, name)))
    engine = Engine(TrainerConfig(progress=False, log_every=1000), 0, tmp_path / "last.pt", {})
    engine.fit(Toy(), small)
    monkeypatch.undo()
    epochs, steps, terms = 5, 50, 2
    # A handful per epoch (the NaN/inf flag, the loss for the progress bar, the means, the weights
    # check), not one per term and step.
    assert len(reads) <= 4 * epochs < steps * terms


class Conv(Toy):
    """Toy with a convolution first, so that channels-last matters."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3)
        self.formats = []

    def step(self, batch):
        self.formats.append(batch["image"].is_contiguous(memory_format=torch.channels_last))
        return super().step({"image": self.conv(batch["image"])})


def test_channels_last_auto_is_on_for_the_cpu_only_and_other_values_are_refused():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert channels_last_used("auto", cpu) and not channels_last_used("auto", cuda)
    assert channels_last_used(True, cuda) and not channels_last_used(False, cpu)
    with pytest.raises(ValueError, match="trainer.channels_last='yes'"):
        TrainerConfig(channels_last="yes")


def test_channels_last_changes_the_layout_not_the_result(tmp_path, datamodule):
    batch = {"image": torch.zeros(2, 3, 8, 8), "label": torch.zeros(2), "path": ["a", "b"]}
    moved = to_device(batch, torch.device("cpu"), channels_last=True)
    assert moved["image"].is_contiguous(memory_format=torch.channels_last) and moved["path"] == ["a", "b"]
    results = {}
    for flag in (False, True):
        torch.manual_seed(3)
        model = Conv()
        Engine(TrainerConfig(progress=False, channels_last=flag), 0, tmp_path / f"{flag}.pt", {}).fit(model, datamodule)
        assert set(model.formats) == {flag}
        assert model.conv.weight.is_contiguous(memory_format=torch.channels_last) == flag
        results[flag] = model.state_dict()
    for name, value in results[False].items():
        torch.testing.assert_close(results[True][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_compiled_step_trains_like_the_plain_one(tmp_path, datamodule):
    results = {}
    for flag in (False, True):
        torch.manual_seed(5)
        model = Toy()
        Engine(TrainerConfig(progress=False, compile=flag, max_epochs=1), 0, tmp_path / f"{flag}.pt", {}).fit(
            model, datamodule
        )
        results[flag] = model.state_dict()
    for name, value in results[False].items():
        torch.testing.assert_close(results[True][name], value, rtol=1e-5, atol=1e-6)
