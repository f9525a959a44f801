"""Speed figures (``anomalib-lite benchmark`` / ``scripts/benchmark.py``): the evaluator, a family at paper size,
a checkpoint's inference, export, and the peer comparison with anomalib (:mod:`.command`, :mod:`.peer`;
:mod:`.anomalib_peer_run` runs inside anomalib's own Python)."""

from anomalib_lite.research.benchmark.command import main

__all__ = ["main"]
