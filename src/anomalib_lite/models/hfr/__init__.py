"""HFR: hierarchical feature-reconstruction autoencoder."""

from anomalib_lite.models.hfr.model import HFR, HFRConfig

__all__ = ["HFR", "HFRConfig"]
