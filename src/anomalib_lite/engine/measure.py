"""Measuring a run: peak memory (host and CUDA) and waiting for the device before reading a clock; shared by
the benchmark scripts."""

from __future__ import annotations

import resource
import threading

import torch


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
        self.growth_gib = (max(self.peak, self._rss()) - self.before) / 2**30

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
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
