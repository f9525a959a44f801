"""anomalib 2.7's models as baselines (``model=anomalib model.name=patchcore|padim|efficient_ad|reverse_distillation|
fastflow|stfpm``): anomalib's models trained through their own Lightning hooks under our engine, data and evaluator
(optional extra ``anomalib_lite[baselines]``; importing this package never imports anomalib)."""

from anomalib_lite.models.anomalib_baselines.config import BASELINES, AnomalibConfig
from anomalib_lite.models.anomalib_baselines.model import AnomalibBaseline

__all__ = ["BASELINES", "AnomalibBaseline", "AnomalibConfig"]
