"""Model families behind a small registry; importing this package registers them all."""

from anomalib_lite.models import hfr, igd, msfi, utad  # noqa: F401  (registers the families)
from anomalib_lite.models.backbones import BackboneConfig
from anomalib_lite.models.base import AnomalyModel, AnomalyOutput, Stage
from anomalib_lite.models.registry import build_model, model_names

__all__ = ["AnomalyModel", "AnomalyOutput", "BackboneConfig", "Stage", "build_model", "model_names"]
