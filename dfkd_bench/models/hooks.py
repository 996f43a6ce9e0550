"""One forward-hook recorder, in the spirit of torchdistill's `ForwardHookManager`: a model's modules
are addressed by their dotted names (`named_modules()`, or an attribute path such as "classifier"),
what each call yields is returned as data, and `close()` (or leaving a `with` block) removes the hooks.
Models need no special forward signature. The BN-statistics loss, the feature taps of the engine and
the methods' own recorders (CMI's instance statistics, ZSKT's block outputs) are all this recorder.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Mapping

import torch
import torch.nn as nn

# What a hook keeps from one call: (the call's inputs, its output) -> a value; None keeps nothing.
Extract = Callable[[tuple[Any, ...], Any], Any]
KEEP = ("last", "all")


def output_of(inputs: tuple[Any, ...], output: Any) -> Any:
    """The call's output (the default of a `Tap`)."""
    return output


def input_of(inputs: tuple[Any, ...], output: Any) -> Any:
    """The call's first input."""
    return inputs[0]


def batch_statistics(inputs: tuple[Any, ...], output: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, biased variance) per channel of a 4-D input over batch and space, in float32 (what a
    BatchNorm2d layer normalises its input with in training)."""
    var, mean = torch.var_mean(inputs[0].float(), dim=(0, 2, 3), unbiased=False)
    return mean, var


@dataclass(frozen=True)
class Tap:
    """One thing to record: the module's dotted name (see `submodule`) and what to keep of each of its calls."""

    module: str
    extract: Extract = output_of


# The engine's two feature taps, for models of the zoo (they expose `feature_layer` and `classifier`).
CONV_MAP = Tap("feature_layer")              # the last conv map, for CAM-style terms
PENULTIMATE = Tap("classifier", input_of)    # the penultimate features, the classifier's input


class ForwardRecorder:
    """Forward hooks on named modules of a model, recording what each call yields while active.

    `taps` maps a record key to a module name or a `Tap` (a plain list of names keys each record by
    its module's name, with `extract` applied to every call). `keep="last"` keeps each key's latest
    call, `"all"` every call in call order. Recording is off until `capture()` (or `active=True`, for
    a recorder that always records and is emptied by `take()`). Hooks only store device tensors: no
    host synchronisation.
    """

    def __init__(self, model: nn.Module, taps: Mapping[str, str | Tap] | Iterable[str], *,
                 extract: Extract = output_of, keep: str = "last", active: bool = False) -> None:
        if keep not in KEEP:
            raise ValueError(f"keep={keep!r}; choose from: {', '.join(KEEP)}")
        items = taps.items() if isinstance(taps, Mapping) else ((name, name) for name in taps)
        resolved = {key: tap if isinstance(tap, Tap) else Tap(tap, extract) for key, tap in items}
        self.modules: dict[str, nn.Module] = {key: submodule(model, tap.module) for key, tap in resolved.items()}
        self.keep = keep
        self.active = active
        self._calls: dict[str, list[Any]] = {}
        self._handles = [self.modules[key].register_forward_hook(self._hook(key, tap.extract))
                         for key, tap in resolved.items()]

    def _hook(self, key: str, extract: Extract) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def record(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            if not self.active:
                return
            value = extract(inputs, output)
            if value is None:
                return
            values = self._calls.pop(key, [])
            if self.keep == "last":
                values.clear()
            values.append(value)
            self._calls[key] = values  # (re)inserted last: keys follow the order of their latest call
        return record

    @contextmanager
    def capture(self) -> Iterator["ForwardRecorder"]:
        """Record the forwards inside the block (earlier records are dropped first)."""
        was = self.active
        self.clear()
        self.active = True
        try:
            yield self
        finally:
            self.active = was

    def calls(self) -> dict[str, list[Any]]:
        """Every kept call per key, in call order; keys in the order of their latest call."""
        return {key: list(values) for key, values in self._calls.items()}

    def last(self) -> dict[str, Any]:
        """The latest call's value per key; keys in the order of their latest call."""
        return {key: values[-1] for key, values in self._calls.items()}

    def latest(self, key: str) -> Any:
        """The latest recorded value of `key` (None when it recorded nothing)."""
        values = self._calls.get(key)
        return values[-1] if values else None

    def take(self) -> dict[str, Any]:
        """`last()`, and the records are dropped."""
        latest = self.last()
        self.clear()
        return latest

    def clear(self) -> None:
        """Drop what earlier forwards recorded."""
        self._calls = {}

    def close(self) -> None:
        """Remove the hooks from the model (the records stay readable)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "ForwardRecorder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def submodule(model: nn.Module, name: str) -> nn.Module:
    """The module at a dotted name: an attribute path first (so an alias such as the zoo's `classifier`
    property, MobileNetV2's final Linear, is what it names), else the `named_modules()` name it is."""
    try:
        return model.get_submodule(name)
    except AttributeError:
        named = dict(model.named_modules())
        if name not in named:
            raise ValueError(f"{type(model).__name__} has no module {name!r}") from None
        return named[name]


def batchnorm_names(model: nn.Module) -> list[str]:
    """The dotted names of a model's BatchNorm2d layers in registration order (`named_modules()`: each
    layer once, even when it is registered under several names)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)]
