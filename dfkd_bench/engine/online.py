"""`OnlineGeneratorMethod`: methods whose student trains on fresh generator output at every step
(DAFL, ZSKT, DFAD, DFQ) instead of on a bank.

The budget stays the suite's one quantity: a run at ratio r lets the student see r x train_size
distinct synthetic images, drawn fresh from the generator in round(r x train_size / kd_batch) batches
of kd_batch. `budget` says how many student steps they feed:

- "images" (the default, the equal protocol): as many student steps as a bank method takes on the
  same images (the shared rate, kd_per_image or kd_steps / synth_batch per image, plus final_kd_steps),
  each fresh batch trained on for its even share of them. Every method then has the same distinct
  images AND the same student steps per image.
- "fresh": one student step per fresh batch, round(r x train_size / kd_batch) steps: each image is
  seen once, the online loop taken literally (far fewer steps than any other method gets).
- "steps": the paper's own `paper_steps`, each on a fresh batch (the images then follow the steps).

A round is `round_steps` student steps, ending with an evaluation and a checkpoint; before every
`s_steps` student steps the generator takes `g_steps` steps of its own (on batches of its own, which
the student never sees), with one persistent optimiser (Adam at lr_g, betas g_betas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..config import MethodHparams
from ..errors import UserError
from ..schedule import ReferenceSchedule, RoundInfo, Schedule, online_schedule
from .generator_method import GeneratorHparams, GeneratorMethod, GeneratorStep
from .method import MethodContext, SyntheticBatch

BUDGETS = ("images", "fresh", "steps")


@dataclass
class OnlineHparams(GeneratorHparams):
    """GeneratorHparams plus the online loop: s_steps student steps per generator phase, round_steps
    student steps per round, and the budget ("images", "fresh" or "steps": see the module docstring).
    No warm-up, no bank, no synthesis augmentation, keep-best or BN term by default (DFQ turns bn on)."""

    s_steps: int = 1
    round_steps: int = 50
    budget: str = "images"
    paper_steps: int = 0
    bn: float = 0.0
    synth_augment: bool = False
    keep_best: bool = False
    bn_momentum: float = 0.0
    kd_aug: str = "none"

    def validate(self, method: str = "method") -> None:
        super().validate(method)
        self.check_choice(method, "budget", self.budget, BUDGETS)
        for name in ("s_steps", "round_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 1")
        if self.budget == "steps" and self.paper_steps < 1:
            raise UserError(f"{method}.budget=steps needs {method}.paper_steps >= 1 (the paper's student steps); "
                            f"this preset has none")

    def equal_schedule(self, n_total: int, reference: ReferenceSchedule | None = None) -> Schedule:
        """Fresh batches and student steps under the budget (module docstring), in rounds of round_steps."""
        batches = max(1, round(n_total / self.kd_batch))
        if self.budget == "steps":
            batches = steps = self.paper_steps
        elif self.budget == "fresh":
            steps = batches
        else:
            rate = self.kd_per_image or self.kd_steps / self.synth_batch
            steps = max(batches, round(rate * n_total) + self.final_kd_steps)
        return online_schedule(steps, batches, self.kd_batch, self.round_steps, self.budget)


class OnlineGeneratorMethod(GeneratorMethod):
    """A generator method on the online sample source: `train_generator` and `draw` replace `synthesize`."""

    Hparams: ClassVar[type[MethodHparams]] = OnlineHparams
    hp: OnlineHparams
    sample_source: ClassVar[str] = "online"

    def __init__(self, ctx: MethodContext, hparams: OnlineHparams) -> None:
        super().__init__(ctx, hparams)
        self.generator_optimizer = self.round_optimizer(list(self.generator.parameters()))

    @property
    def student_steps_per_generator_step(self) -> int:
        return self.hp.s_steps

    @property
    def adversarial_on(self) -> bool:
        """Online methods have no warm-up: the adversarial term is on whenever its weight is."""
        return self.hp.adv > 0

    def train_generator(self, round: RoundInfo) -> None:
        """g_steps generator steps, each on a fresh latent of kd_batch images (this rank's share of them in
        a process group, the gradients averaged over the ranks), one persistent optimiser."""
        self.round = round
        self.generator.train()
        params = list(self.generator.parameters())
        for index in range(self.hp.g_steps):
            labels = self.round_labels(self.ctx.group.share(self.hp.kd_batch))
            images = self.generated(self.round_latent(labels), self.round_resolution(round))
            loss = self.generator_loss(GeneratorStep(images, labels, index))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            self.share_generator_gradients(params, grads)
            self.apply_gradients(params, grads, self.generator_optimizer)
        self.bn_loss.update_momentum()

    @torch.no_grad()
    def draw(self, n: int) -> SyntheticBatch:
        """n fresh images from the generator (train mode, as the references sample), detached."""
        labels = self.round_labels(n)
        images = self.generated(self.round_latent(labels), self.round_resolution(self.round))
        return SyntheticBatch(images.detach(), labels)

    def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
        """`n` images after one generator phase (for inspection; the engine calls train_generator/draw)."""
        self.train_generator(round or RoundInfo.standalone(images=n))
        return self.draw(n)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator_optimizer": self.generator_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
