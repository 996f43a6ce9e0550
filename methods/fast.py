"""Fast / FastDFKD (Fang et al., AAAI 2022): a meta-learned generator, a few steps a round."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from dfkd_bench.api import (GENERATOR_KINDS, GradientGroups, LatentGenerator, LatentGeneratorMethod,
                            LatentHparams, MethodContext, ParameterGroups, ReferenceSchedule, RoundInfo,
                            SpatialLatentGenerator, UserError, generator_kind, register_method)


@dataclass
class FastHparams(LatentHparams):
    """Generator loss = oh*CE + bn*BN(momentum) + adv*adversarial (adversarial after warm-up).

    Each round clones the meta-generator, takes `g_steps` Adam steps on the clone and a fresh latent
    z, and updates the meta-generator once: `meta=maml` sums the clone's per-step gradients
    (first-order MAML), `meta=reptile` uses theta - theta'. Its Adam (betas 0.5/0.999) runs at
    `lr_g_meta`, 0 meaning lr_g * g_steps (the CIFAR reference).

    Switches (CIFAR reference / ImageNet reference, Fast-Datafree `fast_meta.py` /
    `fast_meta_imagenet.py` with `datafree_kd_imagenet.py`):
    - `generator`: "cifar" (z of nz -> Linear -> (2*ngf, r/4, r/4) -> two upsamplings), "deep" (a
      spatial latent (nz, r/16, r/16) -> five conv stages, four upsamplings: 14x14 -> 224 px; r must
      be a multiple of 16), "auto" (deep at >= 112 px). The ImageNet preset: deep.
    - `persistent_z`: off, a fresh N(0,1) latent every round; on, ONE latent of synth_batch rows is
      meta-learned with the generator (each round starts its inner steps from a copy of it, and the
      meta step moves it at `lr_z_meta`, by the same maml/reptile rule); it is saved for resume.
      `z_life` > 0 re-draws it, and rebuilds the meta-optimiser (as the reference's `reinit`, which
      also drops the generator's Adam moments), at rounds z_life, 2*z_life, ... (by the round's index;
      the reference counts from 1, so its re-draws come one round earlier). ImageNet preset: on, 50.
    - `keep_best`: bank the lowest-loss iterate of the round (CIFAR) or the last one (off: ImageNet;
      the batch's reported loss is then the last iterate's).
    - `adv_in_warmup`: apply the adversarial term from round 0 instead of only after warm-up (the
      ImageNet reference has no warm-up gate). ImageNet preset: on.
    - `reset_l0`: when on and the schedule flags a round (`RoundInfo.reset_l0`; the CIFAR script's
      epoch 120 + warm-up counted from 1, i.e. 0-based epoch 139), the meta-generator's first layer
      weight (the Linear; on the deep generator, which has none, its first conv) and first BatchNorm
      weight are re-drawn from N(0, 0.02), biases zeroed, before the round; the meta-optimiser's state
      is kept, as in the reference. Presets: on for CIFAR-10/100 (the scripts' reset_l0 1), off elsewhere.
    """

    g_steps: int = 5
    lr_g: float = 3e-3
    lr_z: float = 0.01
    meta: str = "maml"
    generator: str = "auto"
    persistent_z: bool = False
    z_life: int = 0
    lr_g_meta: float = 0.0
    lr_z_meta: float = 5e-3
    adv_in_warmup: bool = False
    reset_l0: bool = False

    def generator_resets(self) -> tuple[int, bool]:
        """Equal protocol: no generator re-initialisation; reset_l0 (when on) at the reference's point."""
        return 0, self.reset_l0

    def validate(self, method: str = "fast") -> None:
        super().validate(method)
        self.check_choice(method, "meta", self.meta, ("maml", "reptile"))
        self.check_choice(method, "generator", self.generator, GENERATOR_KINDS)
        for name in ("z_life", "lr_g_meta", "lr_z_meta"):
            if getattr(self, name) < 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 0")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=2)
    # Fast's scripts: adv 1.33 / oh 0.5 for ResNet-34 (the presets), 1.0 for VGG-11, 1.1 and oh 0.4 for WRN.
    TEACHER_PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "vgg11": dict(adv=1.0), "wrn40_2": dict(adv=1.1, oh=0.4)}
    # zju-vipa/Fast-Datafree scripts/fast_cifar.sh: --warmup 20 --epochs 220 --kd_steps 400 --ep_steps 400
    # (one round an epoch), --reset_l0 1. fast_meta.py (@0dcecbc) counts its calls from 1 (line 105:
    # `self.ep += 1`, before line 110's `self.ep == 120 + self.ep_start`), so the re-draw is in the 140th
    # epoch: 0-based epoch 139.
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = {
        name: ReferenceSchedule(warmup_epochs=20, kd_steps_per_epoch=400, reset_l0_epoch=139, reference_epochs=220,
                                source="zju-vipa/Fast-Datafree scripts/fast_cifar.sh") for name in ("cifar10", "cifar100")}
    # ImageNet: Fast-Datafree logs/log-imagenet-resnet50_imagenet-resnet18_imagenet-FastDFKD_50.txt: --epochs 400
    # --ep_steps 1000 --kd_steps 100 (ten rounds of 100 images an epoch, 100 KD steps after each), start_kd 0.
    PAPER["imagenet"] = ReferenceSchedule(warmup_epochs=0, rounds_per_epoch=10, kd_steps_per_epoch=1000,
                                          kd_every_round=True, reference_epochs=400,
                                          source="zju-vipa/Fast-Datafree logs (ImageNet, FastDFKD_50)")
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(ngf=16, nz=64, g_steps=10, lr_g=4e-3, lr_z=0.02, synth_batch=64, warmup_rounds=2,
                       kd_steps=40, kd_batch=128, lr=0.1, temperature=4.0, adv=1.0, final_kd_steps=200),
        "cifar10": dict(g_steps=5, warmup_fraction=0.09, lr_g=3e-3, lr_z=0.01, synth_batch=256, kd_steps=400, kd_batch=256, lr=0.2,
                        weight_decay=1e-4, temperature=20.0, warmup_rounds=20, adv=1.33, oh=0.5, reset_l0=True),
        "cifar100": dict(g_steps=10, warmup_fraction=0.09, lr_g=2e-3, lr_z=0.01, synth_batch=256, kd_steps=400, kd_batch=256, lr=0.2,
                         weight_decay=1e-4, temperature=20.0, warmup_rounds=20, adv=1.33, oh=0.5, reset_l0=True),
        # ImageNet: datafree_kd_imagenet.py with the settings of the repository's ResNet-50 -> ResNet-18
        # log (lr_g_meta 1e-4, lr_z_meta 5e-3, reinit 50, is_maml 0, start_kd 0, batch_size 100: the
        # student's batch too). The student's cosine ends at 0: CosineAnnealingLR(optimizer, T_max=epochs)
        # without eta_min (datafree_kd_imagenet.py ~366; the log's last epoch shows Lr=0.0000).
        # Under --protocol equal the shared recipe's batch replaces kd_batch.
        "imagenet": dict(g_steps=50, lr_g=2e-4, lr_z=0.01, bn=0.1, oh=0.1, adv=1.0, synth_batch=100,
                         kd_steps=400, kd_batch=100, lr=0.1, lr_min_ratio=0.0, weight_decay=1e-4, temperature=5.0,
                         warmup_rounds=20, meta="reptile", generator="deep", persistent_z=True, z_life=50,
                         lr_g_meta=1e-4, lr_z_meta=5e-3, keep_best=False, adv_in_warmup=True),
    }


@register_method("fast", "Fast (FastDFKD): meta-learned generator, fresh latent per round, few steps a round")
class Fast(LatentGeneratorMethod):
    """The meta-generator carries knowledge across rounds so each round needs only `g_steps` steps.

    Each round trains a clone of the meta-generator (`round_parameters`); `apply_gradients` adds the
    clone's gradients to the meta-generator's (maml) and `end_synthesis` takes the meta step.

    In a process group the clone is a shared module while its round runs, so its gradients are averaged
    every step and every rank takes the same meta step; reset_l0 takes rank 0's draw; the persistent
    latent, like a fresh one, is each rank's own (its rows make that rank's images)."""

    Hparams = FastHparams
    hp: FastHparams

    def __init__(self, ctx: MethodContext, hparams: FastHparams) -> None:
        super().__init__(ctx, hparams)
        self.z = self._new_latent(hparams.synth_batch) if hparams.persistent_z else None
        self.meta_optimizer = self._new_meta_optimizer()
        self.fast_generator: nn.Module | None = None
        self._latent: torch.Tensor | None = None

    def build_generator(self) -> LatentGenerator | SpatialLatentGenerator:
        """The meta-generator the `generator` switch picks for the generation resolution."""
        hp, ctx = self.hp, self.ctx
        kind = generator_kind(hp.generator, ctx.resolution)
        if kind == "deep":
            if ctx.resolution % 16:
                raise UserError(f"fast.generator=deep: generation resolution {ctx.resolution} must be a multiple of 16")
            return SpatialLatentGenerator(hp.nz, hp.ngf, ctx.resolution, ctx.spec.in_chans).to(ctx.device)
        return LatentGenerator(hp.nz, hp.ngf, ctx.resolution, ctx.spec.in_chans).to(ctx.device)

    @property
    def adversarial_on(self) -> bool:
        """After warm-up, or from round 0 with adv_in_warmup (the ImageNet reference)."""
        return self.hp.adv > 0 and (self.hp.adv_in_warmup or not self.round.in_warmup)

    def _new_latent(self, n: int) -> torch.Tensor:
        """n latents from N(0, 1), drawn with the run's RNG, as a leaf tensor that requires grad."""
        g = self.ctx.generator
        z = torch.randn(n, *self.generator.latent_shape, generator=g, device=g.device).to(self.ctx.device)
        return z.requires_grad_(True)

    def _new_meta_optimizer(self) -> torch.optim.Adam:
        """Adam over the meta-generator (lr_g_meta, 0: lr_g * g_steps) and the persistent latent (lr_z_meta)."""
        hp = self.hp
        groups: list[dict[str, Any]] = [{"params": list(self.generator.parameters())}]
        if self.z is not None:
            groups.append({"params": [self.z], "lr": hp.lr_z_meta})
        return torch.optim.Adam(groups, lr=hp.lr_g_meta or hp.lr_g * hp.g_steps, betas=(0.5, 0.999))

    def start_round(self, round: RoundInfo) -> None:
        """What the round's info asks for before synthesis: reset_l0, and the persistent latent's re-draw."""
        hp = self.hp
        if hp.reset_l0 and round.reset_l0:
            self.generator.reset_first_layers(self.ctx.generator)
            self.ctx.group.broadcast_module_(self.generator)
        if self.z is not None and hp.z_life > 0 and round.index > 0 and round.index % hp.z_life == 0:
            self.z = self._new_latent(hp.synth_batch)
            self.meta_optimizer = self._new_meta_optimizer()

    def shared_modules(self) -> dict[str, nn.Module]:
        """The base's (the meta-generator as "generator"), and the round's clone while a round runs."""
        clone = {} if self.fast_generator is None else {"round_generator": self.fast_generator}
        return {**super().shared_modules(), **clone}

    def round_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """The round's starting latent: a copy of the persistent one's first n rows, or a fresh draw."""
        n = labels.shape[0]
        if self.z is None:
            return self._new_latent(n)
        if n > self.z.shape[0]:
            raise ValueError(f"fast: a round of {n} images exceeds the persistent latent's {self.z.shape[0]} rows")
        return self.z[:n].detach().clone().requires_grad_(True)

    def round_parameters(self, latent: torch.Tensor) -> ParameterGroups:
        """A fresh clone of the meta-generator ("generator") and the round's latent ("latent"); the meta
        gradients start at zero."""
        self.fast_generator = copy.deepcopy(self.generator).train()
        self._latent = latent
        self.meta_optimizer.zero_grad(set_to_none=False)
        for p in self.generator.parameters():
            p.grad = torch.zeros_like(p)
        if self.z is not None:
            self.z.grad = torch.zeros_like(self.z)
        return {"generator": list(self.fast_generator.parameters()), "latent": [latent]}

    def round_optimizer(self, groups: ParameterGroups) -> torch.optim.Optimizer:
        """Adam over the clone (lr_g) and the latent (lr_z)."""
        return torch.optim.Adam([{"params": groups["generator"]}, {"params": groups["latent"], "lr": self.hp.lr_z}],
                                lr=self.hp.lr_g, betas=tuple(self.hp.g_betas))

    def generate(self, latent: torch.Tensor, resolution: int) -> torch.Tensor:
        """The round's clone on the latent."""
        return self.fast_generator(latent)

    def apply_gradients(self, groups: ParameterGroups, grads: GradientGroups, optimizer: torch.optim.Optimizer) -> None:
        """maml: the clone's gradients are summed into the meta-generator's (and the persistent latent's)."""
        if self.hp.meta == "maml":
            for p, g in zip(self.generator.parameters(), grads["generator"]):
                if g is not None:
                    p.grad.add_(g)
            latent_grad = grads["latent"][0]
            if self.z is not None and latent_grad is not None:
                self.z.grad[:latent_grad.shape[0]].add_(latent_grad)
        super().apply_gradients(groups, grads, optimizer)

    def end_synthesis(self) -> None:
        """The meta step: reptile first sets the meta gradient to theta - theta' (and z - z')."""
        if self.hp.meta == "reptile":
            for p, fp in zip(self.generator.parameters(), self.fast_generator.parameters()):
                p.grad.copy_(p.detach() - fp.detach())
            if self.z is not None:
                n = self._latent.shape[0]  # a short last round uses the first rows
                self.z.grad[:n].copy_(self.z.detach()[:n] - self._latent.detach())
        self.meta_optimizer.step()
        self.fast_generator = self._latent = None

    def state_dict(self) -> dict[str, Any]:
        state = {**super().state_dict(), "meta_optimizer": self.meta_optimizer.state_dict()}
        if self.z is not None:
            state["z"] = self.z.detach().clone()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.z is not None:
            if "z" not in state:
                raise ValueError("fast: this checkpoint has no persistent latent (it was saved with persistent_z off)")
            with torch.no_grad():  # in place: the meta-optimiser holds this tensor
                self.z.copy_(state["z"])
        self.meta_optimizer.load_state_dict(state["meta_optimizer"])
