"""The shared DFKD engine: losses, label layouts, the bank, the KD loop, evaluation, timing, resume."""

from .augment import Normalize, student_augment
from .bank import SyntheticBank, resize
from .labels import balanced_labels, random_labels
from .losses import BNStatisticsLoss, adversarial_loss, js_divergence, kd_loss, total_variation
from .method import Method, MethodContext, SyntheticBatch
from .trainer import CurvePoint, Diverged, DistillationRun, RunOutcome

__all__ = [
    "Normalize", "student_augment", "SyntheticBank", "resize", "balanced_labels", "random_labels",
    "BNStatisticsLoss", "adversarial_loss", "js_divergence", "kd_loss", "total_variation",
    "Method", "MethodContext", "SyntheticBatch", "CurvePoint", "Diverged", "DistillationRun", "RunOutcome",
]
