"""Optional per-phase wall times of the metric computation (``benchmark.py evaluator --profile``)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch

_phases: ContextVar[dict[str, float] | None] = ContextVar("metric_phases", default=None)


@contextmanager
def record_phases() -> Iterator[dict[str, float]]:
    """Collect the seconds spent in each :func:`phase` entered inside this block (summed by name).

    CUDA is synchronised at each phase's edges while recording, so the times are the device's.
    """
    phases: dict[str, float] = {}
    token = _phases.set(phases)
    try:
        yield phases
    finally:
        _phases.reset(token)


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block under ``name`` when :func:`record_phases` is active; otherwise do nothing."""
    phases = _phases.get()
    if phases is None:
        yield
        return
    _synchronize()
    start = time.perf_counter()
    try:
        yield
    finally:
        _synchronize()
        phases[name] = phases.get(name, 0.0) + time.perf_counter() - start


def _synchronize() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()
