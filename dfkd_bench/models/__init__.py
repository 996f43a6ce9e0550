"""Model zoo and feature hooks."""

from . import resnet_small  # noqa: F401  (registers the models)
from .hooks import BNStatistics, FeatureTap
from .zoo import MODELS, create_model, register_model

__all__ = ["MODELS", "create_model", "register_model", "BNStatistics", "FeatureTap"]
