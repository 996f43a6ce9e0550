"""Model zoo and feature hooks."""

from . import cifar, imagenet, resnet_small  # noqa: F401  (register the models)
from .hooks import ForwardRecorder, Tap
from .zoo import (
    MODELS,
    ModelInfo,
    count_parameters,
    create_model,
    model_info,
    parameter_count,
    register_model,
    replace_classifier,
)

__all__ = [
    "MODELS",
    "ModelInfo",
    "create_model",
    "register_model",
    "model_info",
    "count_parameters",
    "parameter_count",
    "replace_classifier",
    "ForwardRecorder",
    "Tap",
]
