"""Pieces of a synthesis step that several methods share: teacher terms, the student's
adversarial term, and keeping the lowest-loss batch of a round."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import BNStatisticsLoss, adversarial_loss
from .method import MethodContext


def teacher_terms(ctx: MethodContext, bn_loss: BNStatisticsLoss, x: torch.Tensor,
                  labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Teacher logits on a normalised batch, its BN-statistics loss and cross-entropy to `labels`."""
    with bn_loss.collect(), ctx.autocast():
        logits = ctx.teacher(x).float()
    return logits, bn_loss(), F.cross_entropy(logits, labels)


def student_logits(ctx: MethodContext, x: torch.Tensor) -> torch.Tensor:
    """Student logits in eval mode, so synthesis never moves the student's BN statistics."""
    was_training = ctx.student.training
    ctx.student.eval()
    with ctx.autocast():
        logits = ctx.student(x).float()
    ctx.student.train(was_training)
    return logits


def student_adversarial(ctx: MethodContext, x: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
    """The boundary loss of the student against the teacher on a synthetic batch."""
    return adversarial_loss(student_logits(ctx, x), t_logits)


class BestIterate:
    """Keeps a clone of the images at the lowest loss seen (the reference CIFAR script aliased
    the tensor and so kept the last iterate; cloning keeps the best)."""

    def __init__(self) -> None:
        self.loss = float("inf")
        self.images: torch.Tensor | None = None

    def update(self, loss: torch.Tensor, images: torch.Tensor) -> None:
        value = float(loss.detach())
        if self.images is None or value < self.loss:
            self.loss = value
            self.images = images.detach().clone()
