"""The engine: NaN detection, safe checkpoints, and resume equal to an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from anomalib_lite.data import DataModule, ImageRecord
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.engine.trainer import Engine, TrainerConfig
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
            Stage("two", 2, list(self.second.parameters()), sgd, self.step,
                  scheduler=lambda opt, total: torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.1, total),
                  on_epoch_end=self.count),
        ]  # fmt: skip


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
