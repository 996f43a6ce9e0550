"""FLOP accounting in units that survive a change of machine: forward+backward FLOPs per phase.

Counts come from `torch.utils.flop_counter.FlopCounterMode`, which derives them from tensor shapes
through per-operator formulas (matmuls, convolutions, attention and their backward passes;
element-wise ops, norms and reductions count zero). It never reads tensor values, so counting does
not synchronise the device; it does add Python dispatch overhead to every op, which is why
`FlopMeter` counts a piece of repeated work once per shape and adds the cached count afterwards.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Callable, Hashable, Iterator

import torch
from torch.utils.flop_counter import FlopCounterMode

from .timing import synchronize

# True while a count_flops call or a FlopMeter.measure body is running in this context: an inner
# measure then only runs its body, so its work is counted once, by the outer scope.
_IN_SCOPE: ContextVar[bool] = ContextVar("dfkd_flop_scope", default=False)


@contextmanager
def _scope() -> Iterator[None]:
    """Mark the enclosed work as already accounted for by an outer count or measure."""
    token = _IN_SCOPE.set(True)
    try:
        yield
    finally:
        _IN_SCOPE.reset(token)


class _NoModuleTracking:
    """Stands in for FlopCounterMode's ModuleTracker: every FLOP goes to "Global" and no hooks are set."""

    parents = frozenset({"Global"})

    def __enter__(self) -> "_NoModuleTracking":
        return self

    def __exit__(self, *args: Any) -> None:
        return None


class _TotalFlopCounter(FlopCounterMode):
    """A silent FlopCounterMode that keeps only the total. Its per-module attribution (ModuleTracker)
    hooks every module input, and those hooks make `torch.autograd.grad` fail when a module's input is
    a leaf that requires grad ("A leaf node was passed to _will_engine_execute_node",
    pytorch/pytorch#131753), as optimised pixels or latents are in synthesis."""

    def __init__(self) -> None:
        super().__init__(display=False)
        self.mod_tracker = _NoModuleTracking()


@contextmanager
def _counting() -> Iterator[FlopCounterMode]:
    """A total-only FlopCounterMode inside an accounting scope."""
    with _scope(), _TotalFlopCounter() as counter:
        yield counter


def count_flops(fn: Callable[[], Any]) -> int:
    """Run `fn` once under FlopCounterMode and return every FLOP it executed (forward and any backward,
    including `torch.autograd.grad` or `.backward()` inside it): the cost of one call, from shapes."""
    with _counting() as counter:
        fn()
    return int(counter.get_total_flops())


class FlopMeter:
    """Accumulates FLOPs per phase ("synth", "kd", "eval") of repeated work, counting each shape once.

    `measure(phase, key)` wraps one piece of work. The first time a (phase, key) pair is seen the body
    runs under FlopCounterMode and its count is cached; later bodies run plain (no counter, no
    overhead) and the cached count is added. The key must therefore determine the work: everything
    that changes the shapes or the ops the body runs (batch size, resolution, warm-up or not, ...).
    Keys are plain Python values (ints, strs, tuples of them) so `state_dict` fits a torch checkpoint
    loaded with weights_only=True.

    Nesting: a measure() entered while another measure() or a `count_flops` call is running just runs
    its body and adds nothing; the outer scope's count (or cached count) already covers that work.
    """

    def __init__(self, enabled: bool = True) -> None:
        """`enabled=False` turns measure() into a plain run of its body (no counting, nothing added)."""
        self.enabled = enabled
        self.totals: dict[str, int] = {}
        self._cache: dict[tuple[str, Hashable], int] = {}

    @contextmanager
    def measure(self, phase: str, key: Hashable) -> Iterator[None]:
        """Run the body, adding its FLOPs to `phase` (counted on the first (phase, key), then cached)."""
        if not self.enabled or _IN_SCOPE.get():
            yield
            return
        cached = self._cache.get((phase, key))
        if cached is None:
            with _counting() as counter:
                yield
            cached = self._cache[(phase, key)] = int(counter.get_total_flops())
        else:
            with _scope():
                yield
        self.totals[phase] = self.totals.get(phase, 0) + cached

    @contextmanager
    def uncounted(self) -> Iterator[None]:
        """Run the body plain, adding nothing (work whose count is not worth the counter's overhead)."""
        with _scope():
            yield

    def has_counted(self, phase: str, key: Hashable) -> bool:
        """Whether work under (phase, key) was counted already (so the next measure runs plain)."""
        return (phase, key) in self._cache

    def tflop(self, phase: str) -> float:
        """The phase's total in TFLOP (1e12 FLOPs)."""
        return self.totals.get(phase, 0) / 1e12

    def state_dict(self) -> dict[str, Any]:
        """Totals and the per-key cache as plain Python ints, so a resumed run keeps counting."""
        return {"totals": dict(self.totals),
                "cache": [(phase, key, flops) for (phase, key), flops in self._cache.items()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved."""
        self.totals = {str(phase): int(flops) for phase, flops in state["totals"].items()}
        self._cache = {(str(phase), _hashable(key)): int(flops) for phase, key, flops in state["cache"]}


def _hashable(key: Any) -> Hashable:
    """A key back from a checkpoint: lists (how some formats return tuples) become tuples again."""
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def achieved_rate(tflop: float, seconds: float) -> float:
    """TFLOP/s of `tflop` done in `seconds` (0.0 when no time was measured)."""
    return tflop / seconds if seconds > 0 else 0.0


def measured_peak_tflops(device: torch.device, dtype: torch.dtype = torch.float32, size: int = 2048,
                         repeats: int = 5) -> float:
    """The best TFLOP/s of a size x size matmul in `dtype` on `device` (2*size^3 FLOPs each): a peak
    measured on the spot, against which a path's achieved rate is a fraction (one warm-up first)."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    torch.mm(a, b)
    best = math.inf
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(device)
        best = min(best, time.perf_counter() - start)
    return achieved_rate(2 * size**3 / 1e12, best)
