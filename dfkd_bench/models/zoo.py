"""The model zoo: create models by name, with the attributes the hooks rely on."""

from __future__ import annotations

from typing import Callable, Protocol

import torch.nn as nn

from ..registry import Registry


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int = 3) -> nn.Module: ...


MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str, description: str = "") -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory `f(num_classes, in_chans) -> nn.Module` under `name`."""
    return MODELS.register(name, description)


def create_model(name: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    """Build a fresh model; it carries `classifier` (final nn.Linear) and `feature_layer`
    (the module whose output is the last conv map), so hooks need no special forward."""
    model = MODELS.get(name)(num_classes=num_classes, in_chans=in_chans)
    model.zoo_name = name
    if not isinstance(getattr(model, "classifier", None), nn.Linear) or getattr(model, "feature_layer", None) is None:
        raise TypeError(f"model {name!r} must expose `classifier` (nn.Linear) and `feature_layer`")
    return model
