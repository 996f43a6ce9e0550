"""The student distillation loop on batches drawn from the synthetic bank."""

from __future__ import annotations

import torch

from .bank import SyntheticBank
from .method import Method, MethodContext


class Distiller:
    """Runs student steps: sample from the bank, augment, teacher targets, the method's loss, SGD step."""

    def __init__(self, ctx: MethodContext, method: Method, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None) -> None:
        """`scheduler` steps after every student step; None when the caller steps it (per epoch)."""
        self.ctx, self.method = ctx, method
        self.optimizer, self.scheduler = optimizer, scheduler
        self.augment = method.augmentation("kd")

    def _group_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx = self.ctx
        images = self.augment(images, ctx.generator)
        x = self.method.teacher_input(images)
        with ctx.autocast():
            with torch.no_grad():
                t_logits = ctx.teacher(x)
            s_logits = ctx.student(x)
        terms = self.method.record_terms("kd", self.method.student_loss(images, labels, s_logits.float(),
                                                                       t_logits.float()))
        return sum(terms.values())

    def train(self, bank: SyntheticBank, steps: int, batch_size: int) -> float:
        """`steps` student updates; returns the mean loss (NaN if any step diverged)."""
        ctx = self.ctx
        ctx.student.train()
        total = torch.zeros((), device=ctx.device)
        for _ in range(steps):
            groups = bank.sample(batch_size, ctx.generator, size=self.method.feed_size)
            loss = sum(self._group_loss(x, y) * (y.shape[0] / batch_size) for x, y in groups)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            if self.scheduler is not None:
                self.scheduler.step()
            total += loss.detach()
        return total.item() / max(1, steps)
