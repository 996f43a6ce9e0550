"""Forward hooks that read what a method needs from a model without a special forward signature."""

from __future__ import annotations

import torch
import torch.nn as nn


class BNStatistics:
    """Per-channel mean and (biased) variance of the input of every BatchNorm2d, on each forward.

    Collection is off until `enabled` is set, so distillation forwards cost nothing extra.
    """

    def __init__(self, model: nn.Module) -> None:
        self.layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        self.means: list[torch.Tensor] = []
        self.vars: list[torch.Tensor] = []
        self.enabled = False
        self._handles = [layer.register_forward_hook(self._hook) for layer in self.layers]

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if not self.enabled:
            return
        x = inputs[0].float()
        var, mean = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
        self.means.append(mean)
        self.vars.append(var)

    def clear(self) -> None:
        """Forget the statistics of earlier forwards."""
        self.means, self.vars = [], []

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
