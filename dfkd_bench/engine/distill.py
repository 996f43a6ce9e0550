"""The student's steps: on batches drawn from the synthetic bank, or on fresh generator output."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Sequence

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from ..models.hooks import PENULTIMATE, ForwardRecorder
from .bank import SyntheticBank
from .flops import FlopMeter
from .method import Method, MethodContext, StudentStep


class StudentSide(nn.Module):
    """The student and the method's student-side parameters (MUSE's projection) as one module, so
    DistributedDataParallel averages all their gradients; its forward is the student's."""

    def __init__(self, student: nn.Module, extra: list[nn.Parameter]) -> None:
        super().__init__()
        self.student = student
        self.extra = nn.ParameterList(extra)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.student(x)


def data_parallel(ctx: MethodContext, method: Method) -> nn.Module:
    """The student's training forward: itself in one process; in a process group the student and its
    side parameters under DistributedDataParallel (rank 0's weights broadcast, gradients averaged)."""
    if not ctx.group.active:
        return ctx.student
    side = StudentSide(ctx.student, method.student_parameters())
    return DistributedDataParallel(side, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)


class Distiller:
    """Runs student steps: augment, teacher targets, the method's `student_loss`, one SGD step.

    When the method declares `needs_student_features`, a tap on the student's classifier records the
    penultimate features of the very forward that gave the logits and passes them in the step. In a
    process group each rank trains on its share of every batch under DistributedDataParallel.
    """

    def __init__(self, ctx: MethodContext, method: Method, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler | None, flops: FlopMeter | None = None) -> None:
        """`scheduler` steps after every student step; None when the caller steps it (per epoch).
        `flops` counts each step's FLOPs under "kd" (once per batch shape)."""
        self.ctx, self.method = ctx, method
        self.flops = flops or FlopMeter(enabled=False)
        self.optimizer, self.scheduler = optimizer, scheduler
        self.augment = method.augmentation("kd")
        self.tap = method.keep_hook(ForwardRecorder(ctx.student, {"penultimate": PENULTIMATE})) \
            if method.needs_student_features else None
        self.student_forward = data_parallel(ctx, method)

    def _group_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ctx, tap = self.ctx, self.tap
        x = self.method.model_input(self.augment(images, ctx.generator))
        with ctx.autocast():
            with torch.no_grad():
                t_logits = ctx.teacher(x)
            with tap.capture() if tap is not None else nullcontext():
                s_logits = self.student_forward(x)
        features = tap.latest("penultimate") if tap is not None else None
        step = StudentStep(x, labels, s_logits.float(), t_logits.float(), features)
        return sum(self.method.record_terms("kd", self.method.student_loss(step)).values())

    def step(self, groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> torch.Tensor:
        """One student update on a batch given as (images, labels) groups (one per stored resolution);
        returns the detached loss, left on the device. Its forwards run in the KD phase's precision."""
        self.ctx.student.train()
        with self.flops.measure("kd", tuple(tuple(x.shape) for x, _ in groups)), self.ctx.in_phase("kd"):
            return self._update(groups, batch_size)

    def _update(self, groups: Sequence[tuple[torch.Tensor, torch.Tensor]], batch_size: int) -> torch.Tensor:
        loss = sum(self._group_loss(x, y) * (y.shape[0] / batch_size) for x, y in groups)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss.detach()

    def train(self, bank: SyntheticBank, steps: int, batch_size: int) -> torch.Tensor:
        """`steps` student updates on bank batches of `batch_size` (this rank's share of it in a process
        group); returns the mean loss, left on the device (NaN if any step diverged)."""
        total = torch.zeros((), device=self.ctx.device)
        local = self.ctx.group.share(batch_size)
        for _ in range(steps):
            total += self.step(bank.sample(local, self.ctx.generator, size=self.method.feed_size), local)
        return total / max(1, steps)
