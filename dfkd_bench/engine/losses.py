"""Losses shared by the methods: BN statistics (with momentum), KD, adversarial, total variation."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.hooks import ForwardRecorder, batch_statistics, batchnorm_names


class BNStatisticsLoss:
    """DeepInversion's feature-distribution loss over a model's BatchNorm2d layers.

    sum over recorded calls of w_l (||mu - running_mean_l||_2 + ||var - running_var_l||_2), plain
    (not squared) L2 norms, where l is the layer that made the call. The statistics are recorded per
    layer (a `ForwardRecorder` keeping every call's `batch_statistics`), so every batch is compared
    with its own layer's running statistics even when the model calls its BN layers out of registration order or skips one; a skipped layer adds
    nothing. A layer called several times in one forward adds one term per call, each against that
    layer's running statistics (each call normalises its input with those statistics, as each call
    updated them in training); the reference's hook keeps only the last call's value (and a skipped
    layer's stale value from an earlier forward). w_l is `first_multiplier` for the first BN layer in
    registration order (`model.modules()`, as the reference's hooks are registered and its
    `first_bn_multiplier` applied: every call of that layer) and 1 for the others. For a model that
    calls each BN layer once in registration order this is the call-order sum of before.

    With `momentum` > 0 (Fast, NAYER) the batch statistics are first smoothed with an EMA buffer,
    mu~ = (1-m) mu_batch + m mu_ema, and `update_momentum` refreshes the buffer after a round. The
    buffer is keyed by (layer index, call number), `ema_keys` parallel to `ema_mean`/`ema_var`;
    a key without a buffer yet (the first round, a call not seen before) uses the plain batch
    statistics, and a key the latest forward did not record keeps its buffer.
    """

    def __init__(self, model: nn.Module, momentum: float = 0.0, first_multiplier: float = 1.0) -> None:
        self.layer_names = batchnorm_names(model)
        self.stats = ForwardRecorder(model, self.layer_names, extract=batch_statistics, keep="all")
        self.momentum = momentum
        self.first_multiplier = first_multiplier
        self.ema_keys: list[tuple[int, int]] | None = None
        self.ema_mean: list[torch.Tensor] | None = None
        self.ema_var: list[torch.Tensor] | None = None

    def close(self) -> None:
        """Detach the hooks from the model."""
        self.stats.close()

    @contextmanager
    def collect(self) -> Iterator[None]:
        """Record the BN-input statistics of the forwards inside the block (earlier ones are dropped)."""
        with self.stats.capture():
            yield

    def records(self) -> list[tuple[int, int, nn.Module, torch.Tensor, torch.Tensor]]:
        """(layer index, call number, layer, mean, var) of every call recorded in the latest `collect()`;
        layers in registration order, the calls of one layer in call order."""
        calls = self.stats.calls()
        return [(i, k, self.stats.modules[name], mean, var)
                for i, name in enumerate(self.layer_names)
                for k, (mean, var) in enumerate(calls.get(name, ()))]

    def _ema(self) -> dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]]:
        if self.ema_keys is None or self.ema_mean is None or self.ema_var is None:
            return {}
        return dict(zip(self.ema_keys, zip(self.ema_mean, self.ema_var)))

    def _smoothed(self) -> list[tuple[tuple[int, int], nn.Module, torch.Tensor, torch.Tensor]]:
        """((layer index, call number), layer, mean, var) of every recorded call, EMA-smoothed."""
        records = self.records()
        ema = self._ema() if self.momentum > 0 else {}
        m = self.momentum
        out = []
        for i, k, layer, mu, var in records:
            if (i, k) in ema:
                e_mu, e_var = ema[(i, k)]
                mu, var = (1 - m) * mu + m * e_mu, (1 - m) * var + m * e_var
            out.append(((i, k), layer, mu, var))
        return out

    def __call__(self) -> torch.Tensor:
        """The loss for the statistics of the latest `collect()`."""
        total: torch.Tensor | None = None
        for (i, _), layer, mu, var in self._smoothed():
            term = torch.linalg.vector_norm(mu - layer.running_mean) + torch.linalg.vector_norm(var - layer.running_var)
            term = (self.first_multiplier if i == 0 else 1.0) * term
            total = term if total is None else total + term
        if total is None:
            raise RuntimeError("BN-statistics loss: no BatchNorm2d call was recorded (forward outside collect()?)")
        return total

    @torch.no_grad()
    def update_momentum(self) -> None:
        """Fold the latest batch statistics into the EMA buffer (once per synthesis round)."""
        if self.momentum <= 0 or not self.stats.calls():
            return
        ema = self._ema()
        for key, _, mu, var in self._smoothed():
            ema[key] = (mu.detach().clone(), var.detach().clone())
        self.ema_keys = sorted(ema)
        self.ema_mean = [ema[key][0] for key in self.ema_keys]
        self.ema_var = [ema[key][1] for key in self.ema_keys]

    def state_dict(self) -> dict:
        return {"ema_mean": self.ema_mean, "ema_var": self.ema_var, "ema_keys": self.ema_keys}

    def load_state_dict(self, state: dict) -> None:
        layers = list(self.stats.modules.values())
        device = layers[0].running_mean.device if layers else None

        def moved(tensors: list[torch.Tensor] | None) -> list[torch.Tensor] | None:
            return None if tensors is None else [t.to(device) for t in tensors]

        self.ema_mean, self.ema_var = moved(state["ema_mean"]), moved(state["ema_var"])
        keys = state.get("ema_keys")
        if keys is None and self.ema_mean is not None:  # a state without keys: one call per layer, in order
            keys = [(i, 0) for i in range(len(self.ema_mean))]
        self.ema_keys = None if keys is None else [(int(i), int(k)) for i, k in keys]


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


def pseudo_label_ce(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's one-hot loss (also DFQ's): CE of the teacher's logits against its own argmax."""
    return F.cross_entropy(logits, logits.argmax(1))


def negative_batch_entropy(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information-entropy loss (also DFQ's): -H(mean softmax over the batch), lowest when balanced."""
    p = F.softmax(logits.float(), dim=1).mean(0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


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
