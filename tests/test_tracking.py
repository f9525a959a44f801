"""Tracking a sweep: TensorBoard's HParams (read back from the event files, as TensorBoard's HParams tab reads
them), MLflow's file store (two jobs, two runs with their params and metrics), the Optuna sweeper (train returns
the objective it maximises) and the options' checks."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.context import RequestContext
from tensorboard.plugins import base_plugin
from tensorboard.plugins.hparams import api_pb2, backend_context, list_session_groups, metadata

from anomalib_lite.api import compose
from anomalib_lite.engine.checkpoint import load_checkpoint
from anomalib_lite.errors import ConfigError
from anomalib_lite.pipeline import tracking
from anomalib_lite.pipeline.config import LoggerConfig
from anomalib_lite.pipeline.setting import flatten
from anomalib_lite.pipeline.tracking import hparam_values, track_category
from anomalib_lite.pipeline.training import run_config

from conftest import TINY, run_entry

CATEGORIES = ("brick", "grass")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A two-job sweep (one category each) with logger=mlflow, started in a fresh folder (its mlruns/)."""
    pytest.importorskip("mlflow", reason="optional extra: pip install -e '.[mlflow]'")
    where = tmp_path_factory.mktemp("tracked")
    result = run_entry(
        "train.py",
        "-m",
        *TINY,
        "logger=mlflow",
        f"category={','.join(CATEGORIES)}",
        f"data.root={where / 'data'}",
        f"hydra.sweep.dir={where / 'sweep'}",
        cwd=where,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return where


def job_folders(sweep: Path) -> dict[str, Path]:
    """Each category's job folder in the sweep."""
    return {category: next((sweep / "sweep").glob(f"category={category},*")) for category in CATEGORIES}


def test_tensorboard_hparams_compare_the_sweep(sweep):
    for category, job in job_folders(sweep).items():
        metrics = json.loads((job / "metrics.json").read_text())["categories"][category]
        events = EventAccumulator(str(job / "tensorboard" / category))
        events.Reload()
        content = events.PluginTagToContent(metadata.PLUGIN_NAME)
        start = metadata.parse_session_start_info_plugin_data(content[metadata.SESSION_START_INFO_TAG])
        end = metadata.parse_session_end_info_plugin_data(content[metadata.SESSION_END_INFO_TAG])
        assert metadata.EXPERIMENT_TAG not in content  # TensorBoard builds the experiment from all the sessions
        stored = load_checkpoint(job / "checkpoints" / category / "last.pt")["config"]  # the category's config
        assert set(start.hparams) == set(flatten(stored))
        assert start.hparams["category"].string_value == category
        assert start.hparams["model.lr"].number_value == 0.4
        assert start.hparams["trainer.resume"].bool_value is False
        assert start.hparams["data.image_size"].number_value == 64
        assert end.status == api_pb2.STATUS_SUCCESS
        (auroc,) = events.Scalars("metrics/image_auroc")
        steps = 2  # 8 training images in batches of 4, one epoch
        assert (auroc.step, auroc.value) == (steps, pytest.approx(metrics["image_auroc"], abs=1e-6))
        losses = [event.value for event in events.Scalars("reconstruction/loss")]
        assert losses == pytest.approx(metrics["training"]["stages"][0]["loss"], abs=1e-6)

    # What TensorBoard's HParams tab shows for the sweep folder: a row per job, the option that differs marked.
    multiplexer = plugin_event_multiplexer.EventMultiplexer()
    multiplexer.AddRunsFromDirectory(str(sweep / "sweep"))
    multiplexer.Reload()
    provider = data_provider.MultiplexerDataProvider(multiplexer, str(sweep / "sweep"))
    context = backend_context.Context(base_plugin.TBContext(multiplexer=multiplexer, data_provider=provider))
    request = RequestContext()
    experiment = context.experiment_from_metadata(
        request, "", True, context.hparams_metadata(request, ""), context.hparams_from_data_provider(request, "", 0)
    )
    assert {info.name for info in experiment.hparam_infos if info.differs} == {"category", "data.category"}
    assert "metrics/image_auroc" in {info.name.tag for info in experiment.metric_infos}
    groups = list_session_groups.Handler(
        request,
        context,
        "",
        api_pb2.ListSessionGroupsRequest(
            start_index=0,
            slice_size=10,
            allowed_statuses=[api_pb2.STATUS_SUCCESS],
            aggregation_type=api_pb2.AGGREGATION_AVG,
        ),
    ).run()
    shown = {
        group.hparams["category"].string_value: {value.name.tag: value.value for value in group.metric_values}
        for group in groups.session_groups
    }
    for category, job in job_folders(sweep).items():
        metrics = json.loads((job / "metrics.json").read_text())["categories"][category]
        assert shown[category]["metrics/image_auroc"] == pytest.approx(metrics["image_auroc"], abs=1e-6)
    assert set(shown) == set(CATEGORIES)


def test_mlflow_holds_the_sweep_as_two_runs(sweep):
    from mlflow.tracking import MlflowClient

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    client = MlflowClient(tracking_uri=(sweep / "mlruns").as_uri())
    experiment = client.get_experiment_by_name("hfr_synthetic")  # the task name
    runs = {run.data.params["category"]: run for run in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(CATEGORIES)
    for category, job in job_folders(sweep).items():
        run = runs[category]
        results = json.loads((job / "metrics.json").read_text())
        metrics = results["categories"][category]
        config = load_checkpoint(job / "checkpoints" / category / "last.pt")["config"]  # the category's config
        assert run.info.status == "FINISHED" and run.info.run_name == f"{job.name}/{category}"
        assert run.data.params["model.lr"] == "0.4" and run.data.params["data.image_size"] == "64"
        assert len(run.data.params) == len(flatten(config))
        for name in ("image_auroc", "pixel_auroc", "aupro"):
            assert run.data.metrics[name] == pytest.approx(metrics[name], abs=1e-6)
        assert run.data.metrics["training_seconds"] == pytest.approx(metrics["training"]["seconds"])
        history = client.get_metric_history(run.info.run_id, "reconstruction/loss")
        assert [m.value for m in history] == pytest.approx(metrics["training"]["stages"][0]["loss"], abs=1e-6)
        artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
        assert {"report.html", "metrics.json"} <= artifacts


def test_every_line_of_a_multirun_job_names_the_job_and_its_category(sweep):
    for number, (category, job) in enumerate(job_folders(sweep).items()):
        lines = [line for line in (job / "train.log").read_text().splitlines() if line.startswith("[")]
        assert len(lines) > 5
        tags = {line.split("] ", 1)[0] + "]" for line in lines}
        assert tags <= {f"[job {number}]", f"[job {number} {category}]"}, tags


def test_hparam_values_keep_types_hparams_can_show():
    config = {"model": {"lr": 0.4, "levels": [1, 2], "name": "hfr"}, "trainer": {"resume": False, "max_epochs": None}}
    assert hparam_values(config) == {
        "model.lr": 0.4,
        "model.levels": "[1, 2]",
        "model.name": "hfr",
        "trainer.resume": False,
        "trainer.max_epochs": "null",
    }


def test_a_failed_category_ends_its_mlflow_run_as_failed_and_its_resumed_success_shows(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="optional extra: pip install -e '.[mlflow]'")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)  # the default store: mlruns/ in the current folder
    cfg = LoggerConfig(name="mlflow")
    with pytest.raises(RuntimeError), track_category(cfg, tmp_path, "cat", {"a": 1}, "task"):
        raise RuntimeError("training failed")
    events = EventAccumulator(str(tmp_path / "tensorboard" / "cat"))
    events.Reload()
    assert metadata.SESSION_END_INFO_TAG not in events.PluginTagToContent(metadata.PLUGIN_NAME)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (run,) = client.search_runs([client.get_experiment_by_name("task").experiment_id])
    assert run.info.status == "FAILED" and run.data.params == {"a": "1"}

    with track_category(cfg, tmp_path, "cat", {"a": 1}, "task") as tracker:  # the resumed run
        tracker.finish({"image_auroc": 0.75}, 10, [])
    events = EventAccumulator(str(tmp_path / "tensorboard" / "cat"))
    events.Reload()
    end = events.PluginTagToContent(metadata.PLUGIN_NAME)[metadata.SESSION_END_INFO_TAG]
    assert metadata.parse_session_end_info_plugin_data(end).status == api_pb2.STATUS_SUCCESS
    statuses = sorted(r.info.status for r in client.search_runs([client.get_experiment_by_name("task").experiment_id]))
    assert statuses == ["FAILED", "FINISHED"]


def test_mlflow_without_its_extra_is_refused_in_one_line_before_any_work(monkeypatch):
    cfg = compose(["logger=mlflow"])
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError) as refused:
        run_config(cfg)
    assert str(refused.value).startswith(
        "logger=mlflow needs the optional extra 'mlflow', which is not installed: pip install -e \".[mlflow]\""
    )
    assert "\n" not in str(refused.value)


def test_unknown_objective_and_logger_are_refused_by_name():
    with pytest.raises(ConfigError, match="objective='auc' is not a metric; choices: image_auroc, pixel_auroc"):
        run_config(compose(["objective=auc"]))
    with pytest.raises(ConfigError, match="logger='wandb'; choices: tensorboard, mlflow"):
        run_config(compose(["logger.name=wandb"]))


def test_the_optuna_sweeper_maximises_the_objective_train_returns(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    sweep = tmp_path / "sweep"
    result = run_entry(
        "train.py",
        "-m",
        "hydra/sweeper=optuna_search",
        "hydra.sweeper.n_trials=3",
        *TINY,
        "category=brick",
        f"data.root={tmp_path / 'data'}",
        f"hydra.sweep.dir={sweep}",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trials = {}
    for job in sweep.glob("category=brick,*"):
        options = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())["model"]
        assert 0.05 <= options["lr"] <= 1.0 and 1.0 <= options["sigma"] <= 8.0  # the preset's search space
        value = json.loads((job / "metrics.json").read_text())["mean"]["image_auroc"]
        trials[(options["lr"], options["sigma"])] = value
    assert len(trials) == 3
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == pytest.approx(max(trials.values()))
    assert trials[(best["best_params"]["model.lr"], best["best_params"]["model.sigma"])] == max(trials.values())
