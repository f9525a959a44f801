"""Measuring a run: peak memory (host and CUDA) and waiting for the device before reading a clock; shared by
the engine's training record and the benchmark scripts."""

from __future__ import annotations

import resource
import threading
from pathlib import Path

import torch

# This process's memory in pages (Linux): size, resident, ...
STATM = Path("/proc/self/statm")


class PeakRSS:
    """This process's peak resident memory (``peak``, bytes) and its growth (``growth_gib``)
    inside a ``with`` block, sampled every 5 ms."""

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.growth_gib = self.growth() / 2**30

    def growth(self) -> int:
        """The growth of the peak resident memory since entering the block, bytes (so far, or the block's)."""
        return max(self.peak, self._rss()) - self.before

    @staticmethod
    def _rss() -> int:
        with open(STATM) as f:
            return int(f.read().split()[1]) * resource.getpagesize()

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self._rss())


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (CUDA; nothing to wait for on the CPU), before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak of ``device``'s allocated memory (CUDA; the CPU's is :class:`PeakRSS`'s)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


class PeakMemory:
    """The peak memory of the work inside a ``with`` block on ``device``, in MiB (:attr:`mib`, read inside the
    block: the peak so far).

    On CUDA: the peak of allocated memory (``torch.cuda.max_memory_allocated``, whose peak is reset on entry, so
    the block's own peak; the memory already allocated on entry, e.g. the model, counts). Elsewhere: the growth of
    this process's peak resident memory (:class:`PeakRSS`), or ``None`` where ``/proc/self/statm`` cannot be read
    (not Linux).
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._host: PeakRSS | None = None

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            reset_peak_memory(self.device)
        elif STATM.is_file():
            self._host = PeakRSS().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._host is not None:
            self._host.__exit__(*exc)

    @property
    def mib(self) -> float | None:
        """The peak since entering the block, MiB; ``None`` where it cannot be measured."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self._host is None:
            return None
        return self._host.growth() / 2**20
