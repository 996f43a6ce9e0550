"""Per-phase wall-clock timing that synchronises the device before reading the clock, and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from typing import Iterator

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Accumulates seconds per named phase (synth, kd, eval)."""

    def __init__(self, device: torch.device, seconds: dict[str, float] | None = None) -> None:
        self.device = device
        self.seconds: dict[str, float] = dict(seconds or {})
        self._pending: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Time a short piece of an inner loop without waiting for the device: on CUDA a pair of events
        whose time `flush` adds once the loop is over; elsewhere the clock, as `phase` does."""
        if self.device.type != "cuda":
            with self.phase(name):
                yield
            return
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        try:
            yield
        finally:
            end.record()
            self._pending.append((name, start, end))

    def flush(self) -> None:
        """Wait for the device once and add the seconds of every pending `span`."""
        if self._pending:
            synchronize(self.device)
            for name, start, end in self._pending:
                self.seconds[name] = self.seconds.get(name, 0.0) + start.elapsed_time(end) / 1000
            self._pending.clear()

    def discount(self, name: str, seconds: float) -> None:
        """Take `seconds` measured under `name` back out (time spent on accounting, not on the work)."""
        self.seconds[name] = self.get(name) - seconds

    def get(self, name: str) -> float:
        return self.seconds.get(name, 0.0)


def peak_memory_mb(device: torch.device) -> float:
    """Peak device memory allocated on CUDA; elsewhere the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024
