"""UTAD: two-stage IE-Net / Expert-Net with perceptual measurement."""

from anomalib_lite.models.utad.model import UTAD, UTADConfig

__all__ = ["UTAD", "UTADConfig"]
