"""IGD: interpolated Gaussian descriptor."""

from anomalib_lite.models.igd.config import IGDConfig
from anomalib_lite.models.igd.model import IGD

__all__ = ["IGD", "IGDConfig"]
