"""IGD: interpolated Gaussian descriptor."""

from anomalib_lite.models.igd.model import IGD, IGDConfig

__all__ = ["IGD", "IGDConfig"]
