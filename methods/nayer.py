"""NAYER (Tran et al., CVPR 2024): label-text embeddings through a noisy layer re-drawn every round."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dfkd_bench.api import (GENERATOR_KINDS, ConvStack, DeepDecoder, GeneratorHparams, GeneratorMethod,
                            MethodContext, ParameterGroups, ReferenceSchedule, RoundInfo, UserError,
                            balanced_labels, generator_kind as resolve_generator_kind, register_method)


@dataclass
class NayerHparams(GeneratorHparams):
    """Generator loss = bn*BN(momentum) + oh*CE + adv*adversarial (adversarial after warm-up).

    Each round re-draws the noisy layers (N(0,1) weights, zero bias), makes a fresh Adam
    (lr_g, betas 0.5/0.999) over generator + noisy layers, takes `g_steps` steps and keeps the
    lowest-loss batch (`keep_best`). `noisy_chunk` samples share one noisy layer (0: the number of
    classes C, the reference; with balanced labels each layer then sees every class once).
    The whole generator is re-initialised before a round whose `RoundInfo.reset_generator` is set;
    the run's schedule decides which rounds from `g_life` (> 0: every g_life rounds under the equal
    protocol, the reference's epoch rule under the paper protocol; 0: never).

    `generator`: "cifar" (the reference's `NLGenerator`: head Linear(noise_dim -> 2*ngf*(r/4)^2),
    BN, two upsamplings), "deep" (its ImageNet `NLDeepGenerator`: head Linear(noise_dim ->
    2*ngf*(r/16)^2), no BN after it, five conv/BN/LeakyReLU stages with four upsamplings, so 224 px
    starts at 14x14; resolutions must be multiples of 16), "auto" (deep when the largest generation
    resolution is >= 112 px). The ImageNet preset: deep.

    Epochs -> rounds: the reference runs 10 synthesis rounds an epoch during its 20 warm-up
    epochs and 2 an epoch afterwards (CIFAR; Tiny-ImageNet 20 and 4), each post-warm-up epoch's
    rounds followed by `kd_steps` student steps. The presets therefore use warmup_rounds = 20 * 10
    = 200 (Tiny-ImageNet 20 * 20 = 400) and g_life = 10 epochs at the post-warm-up rate (20 rounds,
    Tiny-ImageNet 40), so during warm-up the generator is reset 5x more often than in the
    reference. The run length comes from the budget: NAYER100/200/300 on CIFAR (120/220/320
    epochs) are 400/600/800 rounds of 400 images, i.e. --ratio 3.2/4.8/6.4.

    Weight decay 1e-4 is the reference's (datafree_kd.py's `--wd` default, which its scripts keep).
    Not from the NAYER reference: the Tiny-ImageNet warm-up length (20 epochs, as on CIFAR); the
    whole ImageNet preset (Fast's ImageNet student recipe and loss weights, 20 warm-up rounds). The
    digits preset is tuned for the quick suite at Fast's digits scale (12 rounds at ratio 0.5, so no
    generator reset: g_life 0).
    """

    ngf: int = 64
    noise_dim: int = 1000
    noisy_chunk: int = 0
    g_steps: int = 30
    lr_g: float = 4e-3
    g_life: int = 20
    generator: str = "auto"

    def generator_resets(self) -> tuple[int, bool]:
        """Equal protocol: the generator is re-initialised every g_life rounds."""
        return self.g_life, False

    def validate(self, method: str = "nayer") -> None:
        super().validate(method)
        self.check_choice(method, "generator", self.generator, GENERATOR_KINDS)

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=2)
    # tmtuan1307/NAYER@c6bedcd scripts/nayer_200.sh (run/ in earlier commits; CIFAR: --warmup 20 --gwp_loops 10
    # --g_loops 2 --g_life 10, kd_steps 400; Tiny-ImageNet: --gwp_loops 20 --g_loops 4 --kd_steps 1000) with
    # datafree_kd.py's loop.
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = {
        **{name: ReferenceSchedule(warmup_epochs=20, warmup_rounds_per_epoch=10, rounds_per_epoch=2,
                                   kd_steps_per_epoch=400, g_life_epochs=10, reference_epochs=220,
                                   source="tmtuan1307/NAYER scripts/nayer_200.sh") for name in ("cifar10", "cifar100")},
        "tinyimagenet": ReferenceSchedule(warmup_epochs=20, warmup_rounds_per_epoch=20, rounds_per_epoch=4,
                                          kd_steps_per_epoch=1000, g_life_epochs=10, reference_epochs=220,
                                          source="tmtuan1307/NAYER scripts/nayer_200.sh"),
    }
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(ngf=16, noise_dim=1000, g_steps=10, lr_g=4e-3, g_life=0, synth_batch=64,
                       warmup_rounds=2, kd_steps=40, kd_batch=128, lr=0.1, temperature=4.0, adv=1.0,
                       final_kd_steps=200),
        "cifar10": dict(g_steps=30, warmup_fraction=0.33, synth_batch=400, kd_batch=512, kd_steps=400, lr=0.2, weight_decay=1e-4,
                        temperature=20.0, warmup_rounds=200, g_life=20),
        "cifar100": dict(g_steps=40, warmup_fraction=0.33, synth_batch=400, kd_batch=512, kd_steps=400, lr=0.2, weight_decay=1e-4,
                         temperature=20.0, warmup_rounds=200, g_life=20),
        "tinyimagenet": dict(g_steps=60, warmup_fraction=0.33, synth_batch=200, kd_batch=256, kd_steps=1000, lr=0.1, weight_decay=1e-4,
                             temperature=20.0, warmup_rounds=400, g_life=40),
        "imagenet": dict(g_steps=50, synth_batch=100, kd_batch=128, kd_steps=400, lr=0.1, weight_decay=1e-4,
                         temperature=5.0, warmup_rounds=20, g_life=20, bn=0.1, oh=0.1, adv=1.0, generator="deep"),
    }


class NoisyLabelGenerator(nn.Module):
    """f_y -> BatchNorm1d -> noisy Linear(D -> noise_dim) -> Linear head of resolution r -> decoder.

    Sample i passes through noisy layer i // chunk (one layer per chunk of samples), so equal labels
    in different chunks give different images. The noisy layers live one round: `reset_noise`
    re-draws them as fresh tensors that the round's optimiser trains; they are non-persistent
    buffers, so checkpoints do not carry them (a resumed round re-draws them from the restored RNG).
    The decoder is fully convolutional and shared by every resolution; each resolution r has its own
    head Linear(noise_dim -> 2*ngf*(r/u)^2), u the decoder's upscale (`deep=False`: ConvStack, u = 4;
    `deep=True`: DeepDecoder, u = 16), so generating at r costs work proportional to r^2 in every
    layer after the noisy one. A deep generator for {112, 224} starts a 112 round at 7x7 and a 224
    round at 14x14, both through all four upsamplings of the one decoder.
    """

    def __init__(self, embed_dim: int, noise_dim: int, ngf: int, resolutions: Sequence[int], out_chans: int,
                 chunk: int, max_batch: int, deep: bool = False) -> None:
        super().__init__()
        up = DeepDecoder.upscale if deep else ConvStack.upscale
        bad = [r for r in resolutions if r % up or r < up]
        if bad:
            raise ValueError(f"generator resolutions must be positive multiples of {up}, got {bad}")
        self.ngf, self.chunk, self.upscale = ngf, chunk, up
        self.norm = nn.BatchNorm1d(embed_dim)
        layers = math.ceil(max_batch / chunk)
        self.register_buffer("noise_weight", torch.zeros(layers, noise_dim, embed_dim), persistent=False)
        self.register_buffer("noise_bias", torch.zeros(layers, noise_dim), persistent=False)
        self.heads = nn.ModuleDict({str(r): nn.Linear(noise_dim, 2 * ngf * (r // up) ** 2) for r in resolutions})
        self.decode = DeepDecoder(2 * ngf, ngf, out_chans) if deep else ConvStack(ngf, out_chans)

    @property
    def max_batch(self) -> int:
        """The most samples one forward can take (one chunk per noisy layer)."""
        return self.noise_weight.shape[0] * self.chunk

    def reset_noise(self, generator: torch.Generator) -> None:
        """Re-draw every noisy layer (N(0,1) weights, zero bias): NAYER's source of per-round diversity."""
        noise = torch.randn(self.noise_weight.shape, generator=generator, device=generator.device)
        self.noise_weight = noise.to(self.noise_weight.device).requires_grad_()
        self.noise_bias = torch.zeros_like(self.noise_bias).requires_grad_()

    def round_parameters(self) -> list[torch.Tensor]:
        """What a round's optimiser trains: the generator's parameters and the current noisy layers."""
        return [*self.parameters(), self.noise_weight, self.noise_bias]

    def noisy(self, features: torch.Tensor) -> torch.Tensor:
        """Apply noisy layer k to the k-th chunk of `chunk` consecutive samples."""
        if features.shape[0] > self.max_batch:
            raise ValueError(f"batch of {features.shape[0]} exceeds the generator's {self.max_batch} samples")
        parts = features.split(self.chunk)
        return torch.cat([F.linear(p, w, b) for p, w, b in zip(parts, self.noise_weight, self.noise_bias)])

    def forward(self, embeddings: torch.Tensor, resolution: int) -> torch.Tensor:
        """Images in [0,1] of size `resolution` for a batch of label embeddings (N, D)."""
        hidden = self.heads[str(resolution)](self.noisy(self.norm(embeddings)))
        side = resolution // self.upscale
        return self.decode(hidden.view(-1, 2 * self.ngf, side, side))


@register_method("nayer", "NAYER: label-text embeddings through a noisy layer re-drawn each round, balanced labels")
class Nayer(GeneratorMethod):
    """A persistent label-conditioned generator; fresh noisy layers and a fresh Adam every round."""

    Hparams = NayerHparams
    hp: NayerHparams

    def __init__(self, ctx: MethodContext, hparams: NayerHparams) -> None:
        self.embeddings = ctx.label_embeddings()
        super().__init__(ctx, hparams)

    @classmethod
    def check_resolution(cls, resolution: int) -> None:
        """The generator quadruples a (r/4)x(r/4) map, so r must be a multiple of 4."""
        if resolution % 4:
            raise UserError(f"generation resolution {resolution}: {cls.name} generates at multiples of 4 only")

    @property
    def chunk(self) -> int:
        """Samples that share one noisy layer."""
        return self.hp.noisy_chunk if self.hp.noisy_chunk > 0 else self.ctx.spec.num_classes

    @property
    def generator_kind(self) -> str:
        """The `generator` switch resolved ("cifar" or "deep") at the largest generation resolution."""
        return resolve_generator_kind(self.hp.generator, max(self.ctx.resolutions))

    def build_generator(self) -> NoisyLabelGenerator:
        """A freshly initialised generator with one head per generation resolution."""
        hp, ctx = self.hp, self.ctx
        deep = self.generator_kind == "deep"
        bad = [r for r in ctx.resolutions if r % 16] if deep else []
        if bad:
            raise UserError(f"{self.name}.generator=deep: generation resolutions must be multiples of 16, "
                            f"got {', '.join(map(str, bad))}")
        return NoisyLabelGenerator(self.embeddings.shape[1], hp.noise_dim, hp.ngf, ctx.resolutions,
                                   ctx.spec.in_chans, self.chunk, max(hp.synth_batch, 2), deep=deep).to(ctx.device)

    def start_round(self, round: RoundInfo) -> None:
        """Re-initialise the generator when the round asks for it (rank 0's in a process group), and re-draw
        the noisy layers every round (each rank its own: they are the round's latent, like Fast's z)."""
        if round.reset_generator:
            self.generator = self.prepared_generator()
            self.ctx.group.broadcast_module_(self.generator)
        self.generator.reset_noise(self.ctx.generator)

    def round_labels(self, n: int) -> torch.Tensor:
        """Balanced labels; BatchNorm1d needs two samples, so a last round of one image makes two."""
        return balanced_labels(max(n, 2), self.ctx.spec.num_classes, self.ctx.generator, self.ctx.device)

    def round_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """The label-text embedding of each target label."""
        return self.embeddings[labels]

    def generate(self, latent: torch.Tensor, resolution: int) -> torch.Tensor:
        return self.generator(latent, resolution)

    def round_parameters(self, latent: torch.Tensor) -> ParameterGroups:
        """The generator's parameters and this round's noisy layers (one group: one learning rate)."""
        return {"generator": self.generator.round_parameters()}
