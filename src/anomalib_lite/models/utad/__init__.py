"""UTAD: two-stage IE-Net / Expert-Net with perceptual measurement."""

from anomalib_lite.models.utad.config import UTADConfig
from anomalib_lite.models.utad.model import UTAD

__all__ = ["UTAD", "UTADConfig"]
