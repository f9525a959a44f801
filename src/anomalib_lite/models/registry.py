"""Model families by name: each registers its class and its config dataclass."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from anomalib_lite.errors import ConfigError
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel

_MODELS: dict[str, tuple[type[AnomalyModel], type]] = {}


def register_model(name: str, config_cls: type) -> Callable[[type[AnomalyModel]], type[AnomalyModel]]:
    """Class decorator: make a model family buildable as ``model=<name>`` with ``config_cls``."""

    def add(cls: type[AnomalyModel]) -> type[AnomalyModel]:
        _MODELS[name] = (cls, config_cls)
        return cls

    return add


def model_names() -> list[str]:
    """Names of the registered model families."""
    return sorted(_MODELS)


def model_config_class(name: str) -> type:
    """The config dataclass of a registered model family."""
    if name not in _MODELS:
        raise ConfigError(f"model.name={name!r} is unknown; choices: {', '.join(model_names())}")
    return _MODELS[name][1]


def model_class(name: str) -> type[AnomalyModel]:
    """The class of a registered model family (e.g. for its :meth:`~AnomalyModel.tiny` setting)."""
    model_config_class(name)
    return _MODELS[name][0]


def build_model(model_cfg: Any, backbone_cfg: BackboneConfig) -> AnomalyModel:
    """Instantiate a model from its validated config dataclass (``cfg.model``) and backbone."""
    model_config_class(model_cfg.name)
    return _MODELS[model_cfg.name][0](model_cfg, backbone_cfg)
