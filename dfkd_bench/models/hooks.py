"""Forward hooks that read what a method needs from a model without a special forward signature."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn


class BNStatistics:
    """Per-channel mean and (biased) variance of the input of every BatchNorm2d call, keyed by layer.

    `layers` lists the model's BatchNorm2d modules in registration order (`model.modules()`: each
    module once, even when it is registered under several names). Each forward call of a layer
    appends its batch statistics to `calls[layer]`, so the statistics stay paired with the layer
    that produced them whatever order the model calls its layers in: a layer the forward skips has
    no entry, a layer it calls twice has two, in call order.
    `records()` lists every recorded call as (layer index, call number, layer, mean, var).

    Collection is off until `enabled` is set, so distillation forwards cost nothing extra.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers: list[nn.BatchNorm2d] = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.calls: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.enabled = False
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = inputs[0].float()
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        self.calls.setdefault(module, []).append((mean, var))

    def records(self) -> list[tuple[int, int, nn.Module, torch.Tensor, torch.Tensor]]:
        """(layer index, call number, layer, mean, var) of every recorded call; layers in
        registration order, the calls of one layer in call order."""
        return [(i, k, layer, mean, var)
                for i, layer in enumerate(self.layers)
                for k, (mean, var) in enumerate(self.calls.get(layer, ()))]

    @property
    def means(self) -> list[torch.Tensor]:
        """Batch means of every recorded call, in `records()` order (for inspection)."""
        return [r[3] for r in self.records()]

    @property
    def vars(self) -> list[torch.Tensor]:
        """Batch variances of every recorded call, in `records()` order (for inspection)."""
        return [r[4] for r in self.records()]

    def clear(self) -> None:
        """Forget the statistics of earlier forwards."""
        self.calls = {}

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()


class FeatureTap:
    """Keeps the last conv map (output of `model.feature_layer`) and the penultimate features
    (input of `model.classifier`) of the latest forward, when enabled."""

    def __init__(self, model: nn.Module) -> None:
        self.classifier: nn.Linear = model.classifier
        self.conv_map: torch.Tensor | None = None
        self.penultimate: torch.Tensor | None = None
        self.enabled = False
        self._handles = [
            model.feature_layer.register_forward_hook(self._keep_map),
            model.classifier.register_forward_pre_hook(self._keep_features),
        ]

    @contextmanager
    def capture(self) -> Iterator["FeatureTap"]:
        """Record the forwards inside the block (what earlier forwards left is cleared first)."""
        was = self.enabled
        self.conv_map = self.penultimate = None
        self.enabled = True
        try:
            yield self
        finally:
            self.enabled = was

    def _keep_map(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if self.enabled:
            self.conv_map = output

    def _keep_features(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if self.enabled:
            self.penultimate = inputs[0]

    def remove(self) -> None:
        """Detach the hooks from the model."""
        for handle in self._handles:
            handle.remove()
