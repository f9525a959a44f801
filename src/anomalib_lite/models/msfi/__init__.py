"""MSFI: multi-scale teacher–student feature imitation with module weight search."""

from anomalib_lite.models.msfi.config import MSFIConfig
from anomalib_lite.models.msfi.model import MSFI

__all__ = ["MSFI", "MSFIConfig"]
