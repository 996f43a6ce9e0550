"""Losses shared by the methods: BN statistics (with momentum), KD, adversarial, total variation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.hooks import BNStatistics


class BNStatisticsLoss:
    """DeepInversion's feature-distribution loss over a model's BatchNorm2d layers.

    sum_l w_l (||mu_l - running_mean_l||_2 + ||var_l - running_var_l||_2), plain (not squared) L2 norms.
    With `momentum` > 0 (Fast, NAYER) the batch statistics are first smoothed with an EMA buffer,
    mu~ = (1-m) mu_batch + m mu_ema, and `update_momentum` refreshes the buffer after a round.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0, first_multiplier: float = 1.0) -> None:
        self.stats = BNStatistics(model)
        self.momentum = momentum
        self.first_multiplier = first_multiplier
        self.ema_mean: list[torch.Tensor] | None = None
        self.ema_var: list[torch.Tensor] | None = None

    def remove(self) -> None:
        """Detach the hooks from the model."""
        self.stats.remove()

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record the BN-input statistics of the forwards inside the block (earlier ones are dropped)."""
        self.stats.clear()
        self.stats.enabled = True
        try:
            yield
        finally:
            self.stats.enabled = False

    def _smoothed(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        means, variances = self.stats.means, self.stats.vars
        if self.momentum <= 0 or self.ema_mean is None or self.ema_var is None:
            return means, variances
        m = self.momentum
        return ([(1 - m) * b + m * e for b, e in zip(means, self.ema_mean)],
                [(1 - m) * b + m * e for b, e in zip(variances, self.ema_var)])

    def __call__(self) -> torch.Tensor:
        """The loss for the statistics collected since the last `stats.clear()`."""
        means, variances = self._smoothed()
        total = means[0].new_zeros(())
        for i, (layer, mu, var) in enumerate(zip(self.stats.layers, means, variances)):
            term = torch.linalg.vector_norm(mu - layer.running_mean) + torch.linalg.vector_norm(var - layer.running_var)
            total = total + (self.first_multiplier if i == 0 else 1.0) * term
        return total

    @torch.no_grad()
    def update_momentum(self) -> None:
        """Fold the latest batch statistics into the EMA buffer (once per synthesis round)."""
        if self.momentum <= 0 or not self.stats.means:
            return
        means, variances = self._smoothed()
        self.ema_mean = [t.detach().clone() for t in means]
        self.ema_var = [t.detach().clone() for t in variances]

    def state_dict(self) -> dict:
        return {"ema_mean": self.ema_mean, "ema_var": self.ema_var}

    def load_state_dict(self, state: dict) -> None:
        device = self.stats.layers[0].running_mean.device if self.stats.layers else None

        def moved(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t.to(device) for t in tensors]

        self.ema_mean, self.ema_var = moved(state["ema_mean"]), moved(state["ema_var"])


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """T^2 * KL(softmax(t/T) || softmax(s/T)), averaged over the batch."""
    t = temperature
    log_p_s = F.log_softmax(student_logits.float() / t, dim=1)
    log_p_t = F.log_softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * t * t


def adversarial_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Fast/NAYER boundary loss: -mean_i[1(argmax S = argmax T) * KL(softmax T || softmax S)]."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    log_p_s = F.log_softmax(student_logits.float(), dim=1)
    log_p_t = F.log_softmax(teacher_logits.float(), dim=1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(1)
    return -(agree * kl).mean()


def js_divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Jensen-Shannon divergence between softened student and teacher outputs (DeepInversion's ADI)."""
    p_s = F.softmax(student_logits.float() / temperature, dim=1)
    p_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    m = (0.5 * (p_s + p_t)).clamp_min(1e-8).log()
    return 0.5 * (F.kl_div(m, p_s, reduction="batchmean") + F.kl_div(m, p_t, reduction="batchmean"))


def total_variation(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L1, L2) total variation as DeepInversion defines them: neighbour differences along
    both axes and both diagonals; L1 is the mean absolute difference, L2 the sum of the four norms."""
    d1 = x[:, :, :, :-1] - x[:, :, :, 1:]
    d2 = x[:, :, :-1, :] - x[:, :, 1:, :]
    d3 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    d4 = x[:, :, :-1, :-1] - x[:, :, 1:, 1:]
    l2 = sum(torch.linalg.vector_norm(d) for d in (d1, d2, d3, d4))
    l1 = sum(d.abs().mean() for d in (d1, d2, d3, d4))
    return l1, l2
