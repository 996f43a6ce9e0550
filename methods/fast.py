"""Fast / FastDFKD (Fang et al., AAAI 2022): a meta-learned generator, a few steps a round."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dfkd_bench.config import MethodHparams
from dfkd_bench.engine import BNStatisticsLoss, Method, MethodContext, SyntheticBatch, random_labels
from dfkd_bench.engine import student_augment
from dfkd_bench.engine.generators import LatentGenerator
from dfkd_bench.engine.synthesis import BestIterate, student_adversarial, teacher_terms
from dfkd_bench.errors import UserError
from dfkd_bench.plugins import register_method


@dataclass
class FastHparams(MethodHparams):
    """Generator loss = oh*CE + bn*BN(momentum) + adv*adversarial (adversarial after warm-up).

    Each round clones the meta-generator, takes `g_steps` Adam steps on the clone and a fresh latent
    z, and updates the meta-generator once: `meta=maml` sums the clone's per-step gradients
    (first-order MAML), `meta=reptile` uses theta - theta'. Its Adam runs at lr_g * g_steps.
    """

    nz: int = 256
    ngf: int = 64
    g_steps: int = 5
    lr_g: float = 3e-3
    lr_z: float = 0.01
    oh: float = 0.5
    bn: float = 10.0
    adv: float = 1.33
    bn_momentum: float = 0.9
    meta: str = "maml"
    synth_augment: bool = True
    keep_best: bool = True

    def validate(self, method: str = "fast") -> None:
        super().validate(method)
        self.check_choice(method, "meta", self.meta, ("maml", "reptile"))
        if self.g_steps < 1:
            raise UserError(f"{method}.g_steps={self.g_steps}: it must be >= 1")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=2)
    # Fast's scripts: adv 1.33 / oh 0.5 for ResNet-34 (the presets), 1.0 for VGG-11, 1.1 and oh 0.4 for WRN.
    TEACHER_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "vgg11": dict(adv=1.0), "wrn40_2": dict(adv=1.1, oh=0.4)}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(ngf=16, nz=64, g_steps=10, lr_g=4e-3, lr_z=0.02, synth_batch=64, warmup_rounds=2,
                       kd_steps=40, kd_batch=128, lr=0.1, temperature=4.0, adv=1.0, final_kd_steps=200),
        "cifar10": dict(g_steps=5, lr_g=3e-3, lr_z=0.01, synth_batch=256, kd_steps=400, kd_batch=256, lr=0.2,
                        weight_decay=1e-4, temperature=20.0, warmup_rounds=20, adv=1.33, oh=0.5),
        "cifar100": dict(g_steps=10, lr_g=2e-3, lr_z=0.01, synth_batch=256, kd_steps=400, kd_batch=256, lr=0.2,
                         weight_decay=1e-4, temperature=20.0, warmup_rounds=20, adv=1.33, oh=0.5),
        "imagenet": dict(g_steps=50, lr_g=2e-4, lr_z=0.01, bn=0.1, oh=0.1, adv=1.0, synth_batch=100,
                         kd_steps=400, kd_batch=128, lr=0.1, weight_decay=1e-4, temperature=5.0,
                         warmup_rounds=20, meta="reptile"),
    }


@register_method("fast", "Fast (FastDFKD): meta-learned generator, fresh latent per round, few steps a round")
class Fast(Method):
    """The meta-generator carries knowledge across rounds so each round needs only `g_steps` steps."""

    Hparams = FastHparams
    hp: FastHparams

    def __init__(self, ctx: MethodContext, hparams: FastHparams) -> None:
        super().__init__(ctx, hparams)
        self.generator = LatentGenerator(hparams.nz, hparams.ngf, ctx.resolution, ctx.spec.in_chans).to(ctx.device)
        self.meta_optimizer = torch.optim.Adam(self.generator.parameters(), lr=hparams.lr_g * hparams.g_steps,
                                               betas=(0.5, 0.999))
        self.bn_loss = self.track(BNStatisticsLoss(ctx.teacher, momentum=hparams.bn_momentum))

    def _generator_loss(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        hp, ctx = self.hp, self.ctx
        if hp.synth_augment:
            images = student_augment(images, ctx.spec.hflip, ctx.generator)
        x = self.teacher_input(images)
        t_logits, bn, ce = teacher_terms(ctx, self.bn_loss, x, labels)
        loss = hp.oh * ce + hp.bn * bn
        if hp.adv > 0 and not self.in_warmup:
            loss = loss + hp.adv * student_adversarial(ctx, x, t_logits)
        return loss

    def synthesize(self, n: int) -> SyntheticBatch:
        hp, ctx = self.hp, self.ctx
        labels = random_labels(n, ctx.spec.num_classes, ctx.generator, ctx.device)
        z = torch.randn(n, hp.nz, generator=ctx.generator, device=ctx.generator.device).to(ctx.device)
        z.requires_grad_(True)
        fast_gen = copy.deepcopy(self.generator).train()
        opt = torch.optim.Adam([{"params": fast_gen.parameters()}, {"params": [z], "lr": hp.lr_z}],
                               lr=hp.lr_g, betas=(0.5, 0.999))
        self.meta_optimizer.zero_grad(set_to_none=False)
        for p in self.generator.parameters():
            p.grad = torch.zeros_like(p)
        best = BestIterate()
        for _ in range(hp.g_steps):
            images = fast_gen(z)
            loss = self._generator_loss(images, labels)
            best.update(loss, images)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if hp.meta == "maml":
                for p, fp in zip(self.generator.parameters(), fast_gen.parameters()):
                    if fp.grad is not None:
                        p.grad.add_(fp.grad)
            opt.step()
        if hp.meta == "reptile":
            for p, fp in zip(self.generator.parameters(), fast_gen.parameters()):
                p.grad.copy_(p.detach() - fp.detach())
        self.meta_optimizer.step()
        self.bn_loss.update_momentum()
        kept = best.images if hp.keep_best else images.detach()
        return SyntheticBatch(kept, labels, best.loss)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.state_dict(),
                "meta_optimizer": self.meta_optimizer.state_dict(), "bn_loss": self.bn_loss.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
        self.bn_loss.load_state_dict(state["bn_loss"])
