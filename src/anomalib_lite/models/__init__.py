"""Model families behind a small registry; importing this package registers them all.

``base`` is the contract a family follows (training stages, ``predict``, the metrics its paper reports, a tiny
setting for the contract tests); ``registry`` maps ``model=<name>`` to a family and its config dataclass;
``backbones``, ``layers`` and ``ssim`` are the pieces families share. Each family is one folder with the same
files: ``config.py`` (its options, each labelled paper / ref-code / choice), ``networks.py`` (pure torch),
``model.py`` (its stages and ``predict``, read top to bottom like its paper's method section) and
``paper_tables.yaml`` (its paper's figures).
"""

from anomalib_lite.models import anomalib_baselines, hfr, igd, msfi, utad  # noqa: F401  (registers the families)
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage, TinySetting
from anomalib_lite.models.registry import build_model, model_class, model_names, register_model

__all__ = [
    "AnomalyModel",
    "AnomalyOutput",
    "BackboneConfig",
    "Stage",
    "TinySetting",
    "build_model",
    "model_class",
    "model_names",
    "register_model",
]
