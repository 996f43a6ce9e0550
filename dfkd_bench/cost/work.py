"""Work as the cost model measures it: FLOPs (what `engine.flops` records, from the same counter) and
operators dispatched (what per-step overhead scales with on small work), counted without computing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Hashable

import torch

from torch.utils._python_dispatch import TorchDispatchMode

from ..engine.flops import count_flops


@dataclass(frozen=True)
class Work:
    """FLOPs (forward and backward, `FlopCounterMode`'s formulas), aten operators, and the bytes those
    operators write (what memory-bound element-wise work scales with) of some work."""

    flops: int = 0
    ops: int = 0
    bytes: int = 0

    def __add__(self, other: "Work") -> "Work":
        return Work(self.flops + other.flops, self.ops + other.ops, self.bytes + other.bytes)

    def __sub__(self, other: "Work") -> "Work":
        return Work(self.flops - other.flops, self.ops - other.ops, self.bytes - other.bytes)

    def times(self, count: int | float) -> "Work":
        """This work done `count` times (a fractional count: an expected value); exact for whole counts."""
        if float(count).is_integer():
            count = int(count)
        return Work(round(self.flops * count), round(self.ops * count), round(self.bytes * count))


class _OperatorTally(TorchDispatchMode):
    """Counts the aten operators that reach the dispatcher (forward, backward and optimiser alike), and
    on the meta device answers a repeated functional operator from a cache of its outputs' shapes, so
    a round's later steps skip the meta kernels (Python reference implementations, most of a count's time)."""

    def __init__(self, cache: dict[Hashable, Any]) -> None:
        super().__init__()
        self.ops = 0
        self.bytes = 0
        self.cache = cache

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops += 1
        kwargs = kwargs or {}
        key = _cache_key(func, args, kwargs)
        shapes = self.cache.get(key) if key is not None else None
        out = func(*args, **kwargs) if shapes is None else _empty_like_shapes(shapes)
        if key is not None and shapes is None:
            self.cache[key] = _shapes_of(out)
        self.bytes += _bytes_of(out)
        return out


_PLAIN = (int, float, bool, str, type(None), torch.dtype, torch.device, torch.layout, torch.memory_format)


def _describe(value: Any) -> Hashable:
    """A hashable stand-in for an argument: a meta tensor by its metadata, plain values as they are;
    raises TypeError for anything else (a real tensor, a random generator): such a call is not cached."""
    if isinstance(value, torch.Tensor):
        if value.device.type != "meta":
            raise TypeError("not a meta tensor")
        return ("T", tuple(value.shape), value.stride(), value.dtype)
    if isinstance(value, (list, tuple)):
        return tuple(_describe(v) for v in value)
    if isinstance(value, _PLAIN):
        return value
    raise TypeError(type(value).__name__)


def _cache_key(func: Any, args: Any, kwargs: dict[str, Any]) -> Hashable | None:
    """The cache key of a functional operator on meta tensors (no mutated argument, no aliased output),
    else None."""
    schema = func._schema
    if schema.is_mutable or any(r.alias_info is not None for r in schema.returns):
        return None
    try:
        return (func, _describe(args), _describe(tuple(sorted(kwargs.items()))))
    except TypeError:
        return None


def _shapes_of(out: Any) -> Any:
    """The metadata of an operator's tensor outputs (None when it returned anything else)."""
    if isinstance(out, torch.Tensor) and out.device.type == "meta":
        return (tuple(out.shape), out.stride(), out.dtype)
    if isinstance(out, (list, tuple)) and out and all(isinstance(o, torch.Tensor) for o in out):
        return [_shapes_of(o) for o in out]
    return None


def _bytes_of(out: Any) -> int:
    """Bytes of an operator's tensor outputs."""
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (list, tuple)):
        return sum(_bytes_of(o) for o in out)
    return 0


def _empty_like_shapes(shapes: Any) -> Any:
    """Fresh meta tensors with the cached metadata."""
    if isinstance(shapes, list):
        return tuple(_empty_like_shapes(s) for s in shapes)
    size, stride, dtype = shapes
    return torch.empty_strided(size, stride, dtype=dtype, device="meta")


# Output metadata of the functional meta operators seen, by operator and argument metadata: a function of
# those alone, so one cache serves every count of the process (every run of a grid shares most operators).
_SHAPES: dict[Hashable, Any] = {}


def measure(fn: Callable[[], Any]) -> Work:
    """Run `fn` once and return its Work: FLOPs exactly as `engine.flops.count_flops` counts them (the
    counter a real run records with), the operators it dispatched and the bytes they wrote."""
    with _OperatorTally(_SHAPES) as tally:
        flops = count_flops(fn)
    return Work(flops, tally.ops, tally.bytes)
