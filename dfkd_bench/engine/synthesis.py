"""Pieces of a synthesis step that pixel- and generator-based methods share: the teacher's terms, the
student's logits in eval mode, and keeping the lowest-loss batch of a round."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .losses import BNStatisticsLoss
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


class BestIterate:
    """Keeps a copy of the images at the lowest loss seen (the reference CIFAR script aliased
    the tensor and so kept the last iterate). The choice is made on the device with torch.where,
    so a synthesis step never waits for the device; `loss` reads the value once, at the end."""

    def __init__(self) -> None:
        self._loss: torch.Tensor | None = None
        self.images: torch.Tensor | None = None

    @property
    def loss(self) -> float:
        """The lowest loss seen (inf before the first update), read on the host."""
        return float("inf") if self._loss is None else float(self._loss)

    @property
    def kept_loss(self) -> torch.Tensor | None:
        """The lowest loss seen, left on the device (None before the first update)."""
        return self._loss

    def update(self, loss: torch.Tensor, images: torch.Tensor) -> None:
        loss, images = loss.detach(), images.detach()
        if self._loss is None or self.images is None:
            self._loss, self.images = loss.clone(), images.clone()
            return
        better = loss < self._loss
        self._loss = torch.where(better, loss, self._loss)
        self.images = torch.where(better, images, self.images)
