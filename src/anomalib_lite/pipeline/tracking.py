"""Experiment tracking of a training run, per category, beside ``metrics.json``: TensorBoard always, MLflow with
``logger=mlflow`` (:class:`~anomalib_lite.pipeline.config.LoggerConfig`).

TensorBoard (``tensorboard/<category>/``, one TensorBoard run per category): each epoch's loss terms, learning
rate, time and images/s (the engine's :class:`~anomalib_lite.engine.trainer.ScalarWriter` calls), the final metrics
at the last optimiser step (``metrics/<name>``, written with the images by
:func:`~anomalib_lite.pipeline.evaluation.save_outputs`), and an HParams session: the flattened config (the
category's) as the session's hyper-parameters, and its success once the category is done. A category that raised
gets no status (TensorBoard keeps the first status a run records, so a failure would hide the success of the run
that resumes it). No HParams *experiment* summary is written:
TensorBoard then builds the experiment from all the sessions it finds (every hyper-parameter of every job, marked
when it differs between them, and every scalar tag as a metric column), so the HParams tab compares the jobs of any
sweep, also one whose jobs have different options (``model=hfr,igd``). ``SummaryWriter.add_hparams`` would write
one experiment summary per job, of which TensorBoard shows one.

MLflow (one MLflow run per category, named ``<run folder>/<category>``): the flattened config as params, the same
per-epoch numbers as metrics (step: the optimiser step), the final metrics, and ``report.html`` and
``metrics.json`` as artifacts; the run ends FINISHED, or FAILED when training or evaluation raised.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tensorboard.compat.proto.summary_pb2 import Summary, SummaryMetadata
from tensorboard.plugins.hparams.api_pb2 import Status
from tensorboard.plugins.hparams.metadata import (
    PLUGIN_DATA_VERSION,
    PLUGIN_NAME,
    SESSION_END_INFO_TAG,
    SESSION_START_INFO_TAG,
)
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData, SessionEndInfo, SessionStartInfo
from torch.utils.tensorboard import SummaryWriter

from anomalib_lite.errors import ConfigError
from anomalib_lite.pipeline.config import LOGGERS, LoggerConfig
from anomalib_lite.pipeline.setting import flatten


def check_logger(cfg: LoggerConfig) -> None:
    """Refuse a logger whose optional extra is not installed, before any work.

    Raises:
        ConfigError: one line naming the extra and the command that installs it.
    """
    extra = LOGGERS[cfg.name]
    if extra and importlib.util.find_spec(extra) is None:
        raise ConfigError(
            f"logger={cfg.name} needs the optional extra '{extra}', which is not installed: "
            f'pip install -e ".[{extra}]" (or pip install "anomalib_lite[{extra}]")'
        )


def hparam_values(config: dict[str, Any]) -> dict[str, bool | float | str]:
    """The plain config as HParams values, by dotted name (``model.lr``): booleans, numbers and strings as they
    are, ``None`` as ``"null"``, lists as JSON (``[1, 2]``)."""
    values: dict[str, bool | float | str] = {}
    for name, value in flatten(config).items():
        if value is None:
            values[name] = "null"
        elif isinstance(value, (bool, int, float, str)):
            values[name] = value
        else:
            values[name] = json.dumps(value)
    return values


def final_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The category's float metrics (those :func:`~anomalib_lite.pipeline.evaluation.log_evaluation` writes as
    ``metrics/<name>``), with its training time as ``training_seconds`` when it was recorded."""
    values = {name: value for name, value in metrics.items() if isinstance(value, float)}
    training = metrics.get("training") or {}
    if "seconds" in training:
        values["training_seconds"] = float(training["seconds"])
    return values


def _hparams_summary(tag: str, data: HParamsPluginData) -> Summary:
    """A summary the HParams plugin reads: ``data`` as the plugin data of an empty value tagged ``tag``."""
    data.version = PLUGIN_DATA_VERSION
    plugin = SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME, content=data.SerializeToString())
    return Summary(value=[Summary.Value(tag=tag, metadata=SummaryMetadata(plugin_data=plugin))])


def session_start(hparams: dict[str, bool | float | str]) -> Summary:
    """The HParams session-start summary holding ``hparams`` (see :func:`hparam_values`)."""
    info = SessionStartInfo(start_time_secs=time.time())
    for name, value in hparams.items():
        if isinstance(value, bool):  # before numbers: a bool is an int
            info.hparams[name].bool_value = value
        elif isinstance(value, (int, float)):
            info.hparams[name].number_value = value
        else:
            info.hparams[name].string_value = value
    return _hparams_summary(SESSION_START_INFO_TAG, HParamsPluginData(session_start_info=info))


def session_end() -> Summary:
    """The HParams session-end summary of a session that succeeded (``STATUS_SUCCESS``)."""
    info = SessionEndInfo(status=Status.Value("STATUS_SUCCESS"), end_time_secs=time.time())
    return _hparams_summary(SESSION_END_INFO_TAG, HParamsPluginData(session_end_info=info))


def mlflow_uri(cfg: LoggerConfig) -> str:
    """The MLflow store: ``logger.tracking_uri``, or the file store ``mlruns/`` in the current folder.

    A file store (a ``file:`` URI or a plain path) is allowed with ``MLFLOW_ALLOW_FILE_STORE=true`` (set here unless
    the environment sets it): MLflow 3 refuses its file store without it (*choice*: a local store, no server, no
    database dependency).
    """
    uri = cfg.tracking_uri or (Path.cwd() / "mlruns").as_uri()
    if uri.startswith("file:") or "://" not in uri:
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


class MlflowRun:
    """One MLflow run (through ``MlflowClient``: no global active run, so parallel jobs in one process pool stay
    apart).

    Args:
        cfg: the logger options. experiment: the experiment's name (made when missing). name: the run's name.
        params: its params (values as strings). tags: its tags.
    """

    def __init__(
        self, cfg: LoggerConfig, experiment: str, name: str, params: dict[str, Any], tags: dict[str, str]
    ) -> None:
        from mlflow.entities import Param
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=mlflow_uri(cfg))
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                experiment_id = self.client.create_experiment(experiment)
            except MlflowException:  # another job of the sweep made it meanwhile
                experiment_id = self.client.get_experiment_by_name(experiment).experiment_id
        else:
            experiment_id = found.experiment_id
        self.run_id = self.client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.client.log_batch(self.run_id, params=[Param(key, str(value)) for key, value in params.items()])

    def log_metric(self, key: str, value: float, step: int) -> None:
        """Record ``value`` of metric ``key`` at ``step``."""
        self.client.log_metric(self.run_id, key, value, step=step)

    def log_metrics(self, values: dict[str, float], step: int) -> None:
        """Record several metrics at ``step`` in one call."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(key, v, now, step) for key, v in values.items()])

    def log_artifact(self, path: Path) -> None:
        """Copy the file ``path`` into the run's artifacts."""
        self.client.log_artifact(self.run_id, str(path))

    def end(self, status: str) -> None:
        """End the run: ``FINISHED``, ``FAILED`` or ``KILLED``."""
        self.client.set_terminated(self.run_id, status)


class CategoryTracker:
    """Where one category's numbers go: its TensorBoard writer and, with ``logger=mlflow``, its MLflow run.

    Its :meth:`add_scalar` is the engine's :class:`~anomalib_lite.engine.trainer.ScalarWriter`. Made by
    :func:`track_category`.
    """

    def __init__(self, writer: SummaryWriter, mlflow: MlflowRun | None) -> None:
        self.writer = writer
        self.mlflow = mlflow
        self.finished = False

    def add_scalar(self, tag: str, scalar_value: float, global_step: int | None = None) -> None:
        """Record ``scalar_value`` under ``tag`` at optimiser step ``global_step`` in TensorBoard and MLflow."""
        self.writer.add_scalar(tag, scalar_value, global_step)
        if self.mlflow is not None:
            self.mlflow.log_metric(tag, float(scalar_value), global_step or 0)

    def finish(self, metrics: dict[str, Any], step: int, artifacts: list[Path]) -> None:
        """End the tracking of a category that was trained and evaluated: the HParams session succeeded; MLflow
        gets the final metrics (:func:`final_metrics`, at ``step``) and ``artifacts`` (those that exist) and ends
        FINISHED."""
        self.writer.file_writer.add_summary(session_end(), step)
        self.writer.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(final_metrics(metrics), step)
            for path in artifacts:
                if path.is_file():
                    self.mlflow.log_artifact(path)
            self.mlflow.end("FINISHED")
        self.finished = True

    def fail(self, interrupted: bool) -> None:
        """End the tracking of a category whose training or evaluation raised: the MLflow run ends FAILED
        (``KILLED`` when ``interrupted``); the HParams session gets no status (see the module's docstring)."""
        if self.mlflow is not None:
            self.mlflow.end("KILLED" if interrupted else "FAILED")
        self.finished = True


@contextlib.contextmanager
def track_category(
    cfg: LoggerConfig, folder: Path, category: str, config: dict[str, Any], task_name: str
) -> Iterator[CategoryTracker]:
    """Track one category of the run in ``folder`` while inside: opens ``tensorboard/<category>/`` with the HParams
    session start (``config``, the category's plain config, flattened) and, with ``logger=mlflow``, an MLflow run
    with ``config`` as params in experiment ``logger.experiment`` (default ``task_name``).

    Call :meth:`CategoryTracker.finish` once the category is done; an exception inside ends it as failed
    (:meth:`CategoryTracker.fail`).
    """
    hparams = hparam_values(config)
    with SummaryWriter(str(folder / "tensorboard" / category)) as writer:
        writer.file_writer.add_summary(session_start(hparams), 0)
        mlflow = None
        if cfg.name == "mlflow":
            tags = {"run_folder": str(folder.resolve()), "category": category}
            mlflow = MlflowRun(cfg, cfg.experiment or task_name, f"{folder.name}/{category}", hparams, tags)
        tracker = CategoryTracker(writer, mlflow)
        try:
            yield tracker
        except BaseException as exc:
            if not tracker.finished:
                tracker.fail(isinstance(exc, KeyboardInterrupt))
            raise
