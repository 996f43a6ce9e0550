"""A generator method in one file, built on `GeneratorMethod`'s public hooks.

A latent generator (the DataFree CIFAR generator) makes each round's images. Its loss is the
base's: BN statistics, cross-entropy to random labels, and the adversarial term after warm-up. This
file adds one term of its own, a batch-diversity reward (the mean per-pixel standard deviation over
the batch), so that one round's images do not collapse onto one another. The engine and the base
class do the rest: rounds, generator steps, keep-best, the bank, KD, evaluation and resume.

    dfkd-bench run --plugin example_generator_plugin.py --methods spread_gen --ratio 0.1
    dfkd-bench run --plugin example_generator_plugin.py --methods spread_gen --set spread_gen.spread=0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dfkd_bench.api import GeneratorHparams, GeneratorMethod, GeneratorStep, LatentGenerator, register_method


@dataclass
class SpreadGeneratorHparams(GeneratorHparams):
    """GeneratorHparams (oh, bn, adv, g_steps, lr_g, keep_best, ...) plus this method's knobs; each is
    settable with `--set spread_gen.FIELD=VALUE`."""

    nz: int = 64          # latent size
    ngf: int = 16         # generator width
    spread: float = 0.5   # weight of the batch-diversity reward

    # Per-dataset overrides of the defaults, applied before any --set (digits: the suite's recipe).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(synth_batch=64, g_steps=10, lr_g=4e-3, warmup_rounds=2, adv=1.0, kd_steps=40,
                       kd_batch=128, lr=0.1, temperature=4.0, final_kd_steps=200),
    }


@register_method("spread_gen", "Latent generator with BN statistics, CE, adversarial and a batch-diversity reward")
class SpreadGenerator(GeneratorMethod):
    """A fresh latent every round drives one persistent generator, trained a few steps a round."""

    Hparams = SpreadGeneratorHparams
    hp: SpreadGeneratorHparams

    def build_generator(self) -> LatentGenerator:
        # Called once by GeneratorMethod.__init__; round_latent() draws z of its latent_shape.
        return LatentGenerator(self.hp.nz, self.hp.ngf, self.ctx.resolution, self.ctx.spec.in_chans).to(self.ctx.device)

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        terms = super().generator_terms(step)        # {"bn", "oh"} and "adv" after warm-up
        spread = step.images.std(dim=0).mean()      # step.images: this step's [0,1] output, with grad
        terms["spread"] = -self.hp.spread * spread  # a reward: the generator minimises the sum
        return terms
