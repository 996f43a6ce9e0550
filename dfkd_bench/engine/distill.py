"""The student's steps: on batches drawn from the synthetic bank, or on fresh generator output."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch

from ..models.hooks import FeatureTap
from .bank import SyntheticBank
from .method import Method, MethodContext, StudentStep


class Distiller:
    """Runs student steps: augment, teacher targets, the method's `student_loss`, one SGD step.

    When the method declares `needs_student_features`, a tap on the student's classifier records the
    penultimate features of the very forward that gave the logits and passes them in the step.
    """

    def __init__(self, ctx: MethodContext, method: Method, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
        """`scheduler` steps after every student step; None when the caller steps it (per epoch)."""
        self.ctx, self.method = ctx, method
        self.optimizer, self.scheduler = optimizer, scheduler
        self.augment = method.augmentation("kd")
        self.tap = method.keep_hook(FeatureTap(ctx.student)) if method.needs_student_features else None

    def _group_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx, tap = self.ctx, self.tap
        x = self.method.model_input(self.augment(images, ctx.generator))
        with ctx.autocast():
            with torch.no_grad():
                t_logits = ctx.teacher(x)
            with tap.capture() if tap is not None else nullcontext():
                s_logits = ctx.student(x)
        step = StudentStep(x, labels, s_logits.float(), t_logits.float(), tap.penultimate if tap is not None else None)
        return sum(self.method.record_terms("kd", self.method.student_loss(step)).values())

    def step(self, groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> torch.Tensor:
        """One student update on a batch given as (images, labels) groups (one per stored resolution);
        returns the detached loss, left on the device."""
        self.ctx.student.train()
        loss = sum(self._group_loss(x, y) * (y.shape[0] / batch_size) for x, y in groups)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def train(self, bank: SyntheticBank, steps: int, batch_size: int) -> float:
        """`steps` student updates on bank batches; returns the mean loss (NaN if any step diverged)."""
        total = torch.zeros((), device=self.ctx.device)
        for _ in range(steps):
            total += self.step(bank.sample(batch_size, self.ctx.generator, size=self.method.feed_size), batch_size)
        return total.item() / max(1, steps)
