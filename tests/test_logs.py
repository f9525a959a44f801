"""Seeing why a model fails, from its logs: the training record (per stage: time, images/s, peak memory, the mean
loss of each epoch) in metrics.json and the checkpoints, kept across a resume; the per-epoch lines; the progress
bar's loss on every epoch; the job tag of multirun lines; the run's progress; the metrics table and the report's
path in train.log and eval.log."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import torch
from test_engine import Toy, datamodule  # noqa: F401  (the fixture: 10 toy images, batch 3)

from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.engine.trainer import Engine, TrainerConfig
from anomalib_lite.pipeline import progress
from anomalib_lite.pipeline.progress import RunProgress, duration, set_log_category, tagged_log_lines

from conftest import TINY, run_entry

STAGE_KEYS = {
    "name",
    "epochs",
    "seconds",
    "images_per_second",
    "batch_size",
    "learning_rate",
    "peak_memory_mib",
    "loss",
}


class Recorded(Toy):
    """:class:`Toy` that keeps each step's loss, per epoch (the naive reference for the epoch means)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.losses: list[list[float]] = [[]]

    def step(self, batch):
        terms = super().step(batch)
        self.losses[-1].append(float(terms["loss"].detach()))
        return terms

    def count(self, done: int) -> None:
        self.losses.append([])
        super().count(done)


def test_training_record_holds_each_stage_and_epoch(tmp_path, datamodule, caplog):  # noqa: F811
    model = Recorded()
    engine = Engine(TrainerConfig(progress=False), 0, tmp_path / "last.pt", {})
    with caplog.at_level(logging.INFO, logger="anomalib_lite"):
        engine.fit(model, datamodule)
    record = engine.training
    assert [s["name"] for s in record["stages"]] == ["one", "two"]
    assert all(set(stage) == STAGE_KEYS for stage in record["stages"])
    naive_means = [sum(losses) / len(losses) for losses in model.losses[:-1]]  # a list per epoch, in order
    assert [len(s["loss"]) for s in record["stages"]] == [s["epochs"] for s in record["stages"]] == [3, 2]
    assert record["stages"][0]["loss"] + record["stages"][1]["loss"] == pytest.approx(naive_means, rel=1e-6)
    images_per_epoch = 9  # 10 images in batches of 3, the last partial one dropped
    for stage in record["stages"]:
        assert stage["batch_size"] == 3 and stage["learning_rate"] == 0.05  # Toy's SGD
        assert stage["seconds"] > 0
        assert stage["images_per_second"] * stage["seconds"] == pytest.approx(images_per_epoch * stage["epochs"])
        assert stage["peak_memory_mib"] is None or stage["peak_memory_mib"] >= 0
    assert record["seconds"] == pytest.approx(sum(s["seconds"] for s in record["stages"]))
    assert load_checkpoint(tmp_path / "last.pt")["training"] == record
    lines = [r.getMessage() for r in caplog.records]
    for stage, epochs in (("one", 3), ("two", 2)):
        for epoch in range(1, epochs + 1):
            line = rf"{stage} epoch {epoch}/{epochs}: loss=\S+ .*\(\S+ s, \S+ images/s\)$"
            assert any(re.match(line, x) for x in lines)
        assert any(re.match(rf"{stage}: {epochs} epoch\(s\) in \S+ s, \S+ images/s, peak memory", x) for x in lines)


def test_a_resumed_run_keeps_the_record_of_the_epochs_before(tmp_path, datamodule):  # noqa: F811
    torch.manual_seed(1)
    straight = Engine(TrainerConfig(progress=False), 7, tmp_path / "a.pt", {})
    straight.fit(Toy(), datamodule)

    torch.manual_seed(1)
    config = TrainerConfig(progress=False, checkpoint_every=1)
    with pytest.raises(KeyboardInterrupt):  # dies after stage one's 2nd epoch, before its checkpoint
        Engine(config, 7, tmp_path / "b.pt", {}).fit(Toy(stop_after=2), datamodule)
    before = load_checkpoint(tmp_path / "b.pt")["training"]
    assert [(s["name"], s["epochs"], len(s["loss"])) for s in before["stages"]] == [("one", 1, 1)]

    resumed = Engine(TrainerConfig(progress=False, resume=True, checkpoint_every=1), 7, tmp_path / "b.pt", {})
    resumed.fit(Toy(), datamodule)
    stages = resumed.training["stages"]
    assert [(s["name"], s["epochs"]) for s in stages] == [("one", 3), ("two", 2)]
    for ours, reference in zip(stages, straight.training["stages"]):  # the same losses as without the stop
        assert ours["loss"] == pytest.approx(reference["loss"], abs=1e-6)
    assert stages[0]["seconds"] > before["stages"][0]["seconds"]  # the first session's time is kept and added to
    assert stages[0]["images_per_second"] * stages[0]["seconds"] == pytest.approx(9 * 3)


def test_the_progress_bar_shows_the_loss_on_every_epoch(tmp_path, datamodule, capsys):  # noqa: F811
    Engine(TrainerConfig(log_every=1000), 0, tmp_path / "last.pt", {}).fit(Toy(), datamodule)  # 3 steps per epoch
    bars = capsys.readouterr().err
    for stage, epochs in (("one", 3), ("two", 2)):
        for epoch in range(1, epochs + 1):
            assert re.search(rf"{stage} {epoch}/{epochs}:[^\r\n]*loss=\d", bars), (stage, epoch)


def test_multirun_lines_carry_the_job_tag_and_the_handlers_get_their_formatters_back():
    root = logging.getLogger()
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = logging.Formatter("%(levelname)s - %(message)s")
    handler.setFormatter(formatter)
    root.addHandler(handler)
    child = logging.getLogger("anomalib_lite.engine.trainer")
    level = child.level
    child.setLevel(logging.INFO)
    try:
        with tagged_log_lines(3):
            child.info("before any category")
            set_log_category("brick")
            child.info("training")
            logging.getLogger("elsewhere").warning("another library")
        child.info("after the job")
    finally:
        root.removeHandler(handler)
        child.setLevel(level)
    assert stream.getvalue().splitlines() == [
        "[job 3] INFO - before any category",
        "[job 3 brick] INFO - training",
        "[job 3 brick] WARNING - another library",
        "INFO - after the job",
    ]
    assert handler.formatter is formatter


def test_run_progress_logs_the_elapsed_time_and_the_time_left(monkeypatch, caplog):
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    run = RunProgress(["a", "b", "c", "d"], done={"a"})
    with caplog.at_level(logging.INFO, logger="anomalib_lite"):
        run.start("a", trains=False)
        run.finish("a", trained=False)
        run.start("b", trains=True)
        clock[0] += 90
        run.finish("b", trained=True)
        run.start("c", trains=True)  # 1 category trained in 90 s, 2 left to train (c, d)
        clock[0] += 30
        run.finish("c", trained=True)
        run.start("d", trains=True)  # 2 trained in 120 s, 1 left
        clock[0] += 60
        run.finish("d", trained=True)
    assert [r.getMessage() for r in caplog.records] == [
        "category 1/4: a (finished in an earlier session)",
        "category 2/4: b (elapsed 0 s, time left known after the first category)",
        "category 3/4: c (elapsed 1 min 30 s, about 3 min 00 s left)",
        "category 4/4: d (elapsed 2 min 00 s, about 1 min 00 s left)",
        "4 categories done in 3 min 00 s",
    ]


@pytest.mark.parametrize(("seconds", "text"), [(42.4, "42 s"), (185, "3 min 05 s"), (7620, "2 h 07 min")])
def test_duration_reads_as_people_write_it(seconds, text):
    assert duration(seconds) == text


def test_train_log_and_eval_log_hold_the_metrics_table_and_the_report(tmp_path):
    run = tmp_path / "run"
    trained = run_entry("train.py", *TINY, "category=brick", f"data.root={tmp_path / 'data'}", f"hydra.run.dir={run}")
    assert trained.returncode == 0, trained.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    brick = metrics["categories"]["brick"]
    (stage,) = brick["training"]["stages"]  # HFR: one stage
    assert set(brick["training"]) == {"seconds", "stages"} and set(stage) == STAGE_KEYS
    assert stage["epochs"] == 1 and len(stage["loss"]) == 1 and stage["batch_size"] == 4
    assert stage["images_per_second"] * stage["seconds"] == pytest.approx(8)  # data.n_train=8, one epoch
    log = (run / "train.log").read_text()
    row = next(line for line in log.splitlines() if line.startswith("| brick |"))
    assert row.split(" | ")[1] == f"{brick['image_auroc']:.4f}"
    assert f"report: {run / 'report.html'}" in log and (run / "report.html").is_file()
    assert "category 1/1: brick" in log
    assert re.search(r"reconstruction epoch 1/1: loss=\S+ .*\(\S+ s, \S+ images/s\)", log)

    evaluated = tmp_path / "eval"
    checkpoint = run / "checkpoints" / "brick" / "last.pt"
    result = run_entry("eval.py", f"ckpt_path={checkpoint}", "progress=false", f"hydra.run.dir={evaluated}")
    assert result.returncode == 0, result.stderr[-2000:]
    eval_log = (evaluated / "eval.log").read_text()
    eval_metrics = json.loads((evaluated / "metrics.json").read_text())["categories"]["brick"]
    row = next(line for line in eval_log.splitlines() if line.startswith("| brick |"))
    assert row.split(" | ")[1] == f"{eval_metrics['image_auroc']:.4f}"
    assert f"report: {evaluated / 'report.html'}" in eval_log and (evaluated / "report.html").is_file()
