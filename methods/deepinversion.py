"""DeepInversion (Yin et al., CVPR 2020): optimise the pixels of each batch directly from noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dfkd_bench.config import MethodHparams
from dfkd_bench.engine import BNStatisticsLoss, Method, MethodContext, SyntheticBatch, js_divergence
from dfkd_bench.engine import random_labels, total_variation
from dfkd_bench.engine.synthesis import BestIterate, student_logits, teacher_terms
from dfkd_bench.plugins import register_method


@dataclass
class DeepInversionHparams(MethodHparams):
    """Loss = ce*CE + r_feature*BN + tv_l2*TV2 + tv_l1*TV1 + l2*||x|| + adi*(1 - JS(S,T; T=3)).

    `lowres_iterations` > 0 reproduces ImageNet setting 0: the first iterations show the teacher the
    2x average-pooled image (112 from 224), the rest the full image.
    """

    iterations: int = 2000
    lr_x: float = 0.1
    betas: tuple[float, ...] = (0.5, 0.9)
    ce: float = 1.0
    r_feature: float = 10.0
    first_bn_multiplier: float = 10.0
    tv_l2: float = 2.5e-5
    tv_l1: float = 0.0
    l2: float = 0.0
    adi: float = 0.0
    adi_temperature: float = 3.0
    jitter: int = 2
    flip: bool = True
    lowres_iterations: int = 0
    keep_best: bool = True

    SMOKE: ClassVar[dict[str, Any]] = dict(iterations=4)
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(iterations=120, lr_x=0.1, synth_batch=256, jitter=2, first_bn_multiplier=10.0,
                       r_feature=10.0, tv_l2=1e-4, adi=0.0, kd_steps=160, kd_batch=128, lr=0.1,
                       temperature=4.0, final_kd_steps=200),
        "cifar10": dict(iterations=2000, lr_x=0.1, synth_batch=256, first_bn_multiplier=1.0, r_feature=10.0,
                        tv_l2=2.5e-5, kd_steps=400, kd_batch=256, lr=0.2, weight_decay=1e-4, temperature=20.0),
        "cifar100": dict(iterations=2000, lr_x=0.1, synth_batch=256, first_bn_multiplier=1.0, r_feature=10.0,
                         tv_l2=2.5e-5, kd_steps=400, kd_batch=256, lr=0.2, weight_decay=1e-4,
                         temperature=20.0),
        "imagenet": dict(iterations=3000, lowres_iterations=2000, lr_x=0.25, synth_batch=128, r_feature=0.01,
                         first_bn_multiplier=10.0, tv_l2=1e-4, l2=1e-5, jitter=30, kd_steps=400, kd_batch=128,
                         lr=0.1, weight_decay=1e-4, temperature=5.0),
    }


@register_method("deepinversion", "DeepInversion: pixels optimised from noise (BN stats, TV, L2, jitter, ADI)")
class DeepInversion(Method):
    """No generator: each batch is Adam-optimised from N(0,1) noise in normalised space."""

    Hparams = DeepInversionHparams
    hp: DeepInversionHparams

    def __init__(self, ctx: MethodContext, hparams: DeepInversionHparams) -> None:
        super().__init__(ctx, hparams)
        self.bn_loss = self.track(BNStatisticsLoss(ctx.teacher, momentum=0.0,
                                                   first_multiplier=hparams.first_bn_multiplier))
        self.mean = ctx.normalize.mean.to(ctx.device)
        self.std = ctx.normalize.std.to(ctx.device)

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        hp, g = self.hp, self.ctx.generator
        if hp.jitter > 0:
            shifts = torch.randint(-hp.jitter, hp.jitter + 1, (2,), generator=g, device=g.device).tolist()
            x = torch.roll(x, shifts=shifts, dims=(2, 3))
        if hp.flip and self.ctx.spec.hflip and torch.rand((), generator=g, device=g.device).item() < 0.5:
            x = x.flip(3)
        return x

    def _loss(self, z: torch.Tensor, labels: torch.Tensor, lowres: bool) -> torch.Tensor:
        hp = self.hp
        z_j = self._jitter(z)
        tv_l1, tv_l2 = total_variation(z_j)
        x_in = F.avg_pool2d(z_j, 2) if lowres else z_j
        if self.feed_size is not None and not lowres and x_in.shape[-1] != self.feed_size:
            x_in = F.interpolate(x_in, size=(self.feed_size, self.feed_size), mode="bilinear", align_corners=False)
        if self.ctx.channels_last:
            x_in = x_in.contiguous(memory_format=torch.channels_last)
        t_logits, bn, ce = teacher_terms(self.ctx, self.bn_loss, x_in, labels)
        loss = hp.ce * ce + hp.r_feature * bn + hp.tv_l2 * tv_l2 + hp.tv_l1 * tv_l1
        loss = loss + hp.l2 * torch.linalg.vector_norm(z_j)
        if hp.adi > 0 and not self.in_warmup and self.rounds_done > 0:
            s_logits = student_logits(self.ctx, x_in)
            loss = loss + hp.adi * (1 - js_divergence(s_logits, t_logits, hp.adi_temperature))
        return loss

    def synthesize(self, n: int) -> SyntheticBatch:
        hp, ctx = self.hp, self.ctx
        labels = random_labels(n, ctx.spec.num_classes, ctx.generator, ctx.device)
        shape = (n, ctx.spec.in_chans, ctx.resolution, ctx.resolution)
        z = torch.randn(shape, generator=ctx.generator, device=ctx.generator.device).to(ctx.device)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=hp.lr_x, betas=tuple(hp.betas), eps=1e-8)
        low, high = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        best = BestIterate()
        for it in range(hp.iterations):
            for group in opt.param_groups:
                group["lr"] = hp.lr_x * 0.5 * (1 + math.cos(math.pi * it / hp.iterations))
            loss = self._loss(z, labels, lowres=it < hp.lowres_iterations)
            if hp.keep_best:
                best.update(loss, z)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                z.copy_(torch.maximum(torch.minimum(z, high), low))
        final = best.images if hp.keep_best and best.images is not None else z.detach()
        images = (final * self.std + self.mean).clamp(0, 1)
        return SyntheticBatch(images, labels, best.loss if hp.keep_best else float(loss.detach()))
