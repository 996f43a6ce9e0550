"""The model zoo: create models by name, with the attributes the hooks rely on and the metadata
(input size, family, torchvision builder) that teachers, weights and listings need."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

import torch
import torch.nn as nn

from ..registry import Registry

FAMILIES = ("cifar", "imagenet", "digits")


class ModelFactory(Protocol):
    def __call__(self, num_classes: int, in_chans: int = 3) -> nn.Module: ...


@dataclass(frozen=True)
class ModelInfo:
    """What the zoo knows about a model besides its factory: the resolution it is meant for,
    its family, and the torchvision builder name (for `torchvision.models.get_model_weights`)."""

    name: str
    description: str
    input_size: int
    family: str
    torchvision_name: str | None = None


MODELS: Registry[ModelFactory] = Registry("model")
_INFO: dict[str, ModelInfo] = {}


def register_model(
    name: str,
    description: str = "",
    *,
    input_size: int = 32,
    family: str = "cifar",
    torchvision_name: str | None = None,
) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator registering a factory `f(num_classes, in_chans) -> nn.Module` under `name`, with
    its metadata (a CIFAR-style 32 px model unless told otherwise)."""
    if family not in FAMILIES:
        raise ValueError(f"model family {family!r} must be one of {', '.join(FAMILIES)}")

    def decorator(factory: ModelFactory) -> ModelFactory:
        MODELS.add(name, factory, description)
        key = name.lower()
        entry = next(e for e in MODELS.entries() if e.name == key)
        _INFO[key] = ModelInfo(key, entry.description, input_size, family, torchvision_name)
        return factory

    return decorator


def model_info(name: str) -> ModelInfo:
    """The metadata of the model registered as `name` (unknown names fail naming the choices)."""
    MODELS.get(name)
    return _INFO[name.strip().lower()]


def create_model(name: str, num_classes: int, in_chans: int = 3) -> nn.Module:
    """Build a fresh model; it carries `classifier` (final nn.Linear) and `feature_layer`
    (the module whose output is the last conv map), so hooks need no special forward."""
    model = MODELS.get(name)(num_classes=num_classes, in_chans=in_chans)
    model.zoo_name = name
    if not isinstance(getattr(model, "classifier", None), nn.Linear) or getattr(model, "feature_layer", None) is None:
        raise TypeError(f"model {name!r} must expose `classifier` (nn.Linear) and `feature_layer`")
    return model


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (shared ones counted once), as quoted in papers."""
    return sum(p.numel() for p in model.parameters())


def parameter_count(name: str, num_classes: int = 10) -> int:
    """Parameters of zoo model `name`, built on the meta device (no memory, no init) so listings stay fast."""
    with torch.device("meta"):
        return count_parameters(create_model(name, num_classes))


def replace_classifier(model: nn.Module, new_linear: nn.Linear) -> None:
    """Swap `model.classifier` for `new_linear` where it is registered (e.g. to restrict a 1000-class
    head to a class subset); create hook recorders (ForwardRecorder) after the swap, not before."""
    old = model.classifier
    slots = [(parent, name) for parent in model.modules() for name, child in parent.named_children() if child is old]
    if not slots:
        raise TypeError(f"{type(model).__name__}.classifier is not a submodule of the model")
    for parent, name in slots:
        setattr(parent, name, new_linear)
    if model.classifier is not new_linear:
        raise TypeError(f"{type(model).__name__}.classifier did not follow the swap")
