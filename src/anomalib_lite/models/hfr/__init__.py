"""HFR: hierarchical feature-reconstruction autoencoder."""

from anomalib_lite.models.hfr.config import HFRConfig
from anomalib_lite.models.hfr.model import HFR

__all__ = ["HFR", "HFRConfig"]
