"""Validation of a composed config against the dataclasses of each part, before any work.

Each part is checked against its own dataclass (the model's from the model registry,
the dataset's from :func:`anomalib_lite.data.dataset_config_class`): unknown keys are named
with the valid ones, wrong types and out-of-range values with the option's full name.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from anomalib_lite.data import DataConfig, dataset_config_class
from anomalib_lite.engine.trainer import TrainerConfig
from anomalib_lite.errors import ConfigError
from anomalib_lite.metrics import METRICS
from anomalib_lite.models import BackboneConfig
from anomalib_lite.models.registry import model_config_class, model_names

T = TypeVar("T")


@dataclass
class EvalConfig:
    """Evaluator options (``eval.*``).

    Attributes:
        map_size: side at which pixel metrics are computed (``None``: the input size).
        fpr_limit: upper FPR bound of AUPRO.
        n_maps: how many test images get a PNG overlay in ``maps/``.
        per_defect: also the metrics of each defect type against the good images (``per_defect`` in
            ``metrics.json``).
        curves: also the exact ROC (image, pixel) and PRO curves (``curves/<category>/``).
    """

    map_size: int | None = None
    fpr_limit: float = 0.3
    n_maps: int = 8
    per_defect: bool = True
    curves: bool = True

    def __post_init__(self) -> None:
        if not 0 < self.fpr_limit <= 1:
            raise ValueError(f"eval.fpr_limit={self.fpr_limit} must be in (0, 1]")
        if self.map_size is not None and self.map_size < 1:
            raise ValueError(f"eval.map_size={self.map_size} must be ≥ 1 (or null)")
        if self.n_maps < 0:
            raise ValueError(f"eval.n_maps={self.n_maps} must be ≥ 0")


# logger=…: where a run's numbers go besides metrics.json (TensorBoard always) → the optional extra it needs (checked
# when training starts: anomalib_lite.pipeline.tracking.check_logger).
LOGGERS = {"tensorboard": None, "mlflow": "mlflow"}


@dataclass
class LoggerConfig:
    """Experiment tracking (``logger.*``, ``configs/logger/``); TensorBoard is always written.

    Attributes:
        name: ``tensorboard`` (TensorBoard only) or ``mlflow`` (also an MLflow run per category; extra ``mlflow``).
        tracking_uri: MLflow's store; ``None``: the file store ``mlruns/`` in the current folder (no server).
        experiment: MLflow's experiment name; ``None``: the run's task name (``<model>_<data>``).
    """

    name: str = "tensorboard"
    tracking_uri: str | None = None
    experiment: str | None = None

    def __post_init__(self) -> None:
        if self.name not in LOGGERS:
            raise ValueError(f"logger={self.name!r}; choices: {', '.join(LOGGERS)}")


@dataclass
class RunConfig:
    """A validated training run: every part as its typed dataclass."""

    task_name: str
    seed: int
    category: Any
    model: Any = None
    data: DataConfig | None = None
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # The metric train.py returns to a sweeper that optimises (hydra/sweeper=optuna_search): its mean over the
    # run's categories.
    objective: str = "image_auroc"

    def __post_init__(self) -> None:
        columns = [name for name, metric in METRICS.items() if metric.column]
        if self.objective not in columns:
            raise ValueError(f"objective={self.objective!r} is not a metric; choices: {', '.join(columns)}")
        names = self.category if isinstance(self.category, list) else [self.category]
        if not names or not all(isinstance(name, str) for name in names):
            raise ValueError(
                f"category={self.category!r} must be a name, a list of names or 'all' "
                "(quote a number: category=\"'1'\"; one-class datasets take data.normal_class)"
            )


def _check_keys(values: dict, cls: type, prefix: str) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(
                f"Unknown option {prefix}{key}; valid options of {prefix or 'the config'}: {', '.join(fields)}"
            )
        nested = fields[key].default_factory if fields[key].default_factory is not dataclasses.MISSING else None
        if isinstance(value, dict) and dataclasses.is_dataclass(nested):
            _check_keys(value, nested, f"{prefix}{key}.")


def _typed(values: dict, cls: type, prefix: str) -> Any:
    """Check ``values`` against dataclass ``cls`` and return an instance (``__post_init__`` runs)."""
    _check_keys(values, cls, prefix)
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", "") or ""
        raise ConfigError(f"Bad value for {prefix}{key}: {str(exc).splitlines()[0]}") from exc
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def validate(cfg: DictConfig) -> RunConfig:
    """Resolve every interpolation and check every part of a training config.

    Raises:
        ConfigError: naming the bad option and the valid choices.
    """
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Cannot resolve the config: {exc}") from exc
    values.pop("hydra", None)
    model_name = values.get("model", {}).get("name")
    if model_name not in model_names():
        raise ConfigError(f"model={model_name!r} is unknown; choices: {', '.join(model_names())}")
    data_class = dataset_config_class(values.get("data", {}).get("name"))
    model = _typed(values.pop("model"), model_config_class(model_name), "model.")
    data = _typed(values.pop("data"), data_class, "data.")
    run = _typed(values, RunConfig, "")
    run.model, run.data = model, data
    return run


def validate_options(cfg: DictConfig, cls: type[T]) -> T:
    """Check a command's own options (``eval.py``, ``predict.py``, ``export.py``: ``cfg`` without Hydra's node)
    against dataclass ``cls``, as :func:`validate` checks a training config, before any work.

    Returns:
        The options as an instance of ``cls`` (its ``__post_init__`` checks ranges, raising ``ValueError``).
    Raises:
        ConfigError: a required option is missing, an unknown option (named with the valid ones), a wrong type
            or an out-of-range value (naming the option).
    """
    missing = sorted(OmegaConf.missing_keys(task_config(cfg)))
    if missing:
        raise ConfigError(f"Missing option {missing[0]}: give it on the command line ({missing[0]}=…)")
    try:
        values = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"Cannot resolve the config: {exc}") from exc
    values.pop("hydra", None)
    return _typed(values, cls, "")


def task_config(cfg: DictConfig) -> DictConfig:
    """``cfg`` without Hydra's own node (which, before a run starts, cannot be fully resolved)."""
    return OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])


def plain_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config without Hydra's own node: plain data, safe to store in checkpoints."""
    return OmegaConf.to_container(task_config(cfg), resolve=True)
