"""`OnlineGeneratorMethod`: methods whose student trains on fresh generator output at every step
(DAFL, ZSKT, DFAD, DFQ) instead of on a bank.

The budget stays the suite's one quantity: a run at ratio r lets the student see r x train_size
distinct synthetic images, so an online run takes round(r x train_size / kd_batch) student steps,
each on `kd_batch` freshly drawn images. `budget="steps"` runs the paper's own `paper_steps`
instead (rows record which). A round is `round_steps` student steps, ending with an evaluation and
a checkpoint; before every `s_steps` student steps the generator takes `g_steps` steps of its own,
with one persistent optimiser (Adam at lr_g, betas g_betas), a fresh latent each step.
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

BUDGETS = ("images", "steps")


@dataclass
class OnlineHparams(GeneratorHparams):
    """GeneratorHparams plus the online loop: s_steps student steps per generator phase, round_steps
    student steps per round, and the budget ("images": the ratio's images / kd_batch steps; "steps":
    the paper's `paper_steps`). No warm-up, no bank, no synthesis augmentation, keep-best or BN term
    by default (DFQ turns bn on)."""

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
        """Student steps from the image budget (or the paper's steps), in rounds of round_steps."""
        steps = self.paper_steps if self.budget == "steps" else round(n_total / self.kd_batch)
        return online_schedule(steps, self.kd_batch, self.round_steps, self.budget)


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
        """g_steps generator steps, each on a fresh latent of kd_batch images, one persistent optimiser."""
        self.round = round
        self.generator.train()
        params = list(self.generator.parameters())
        for index in range(self.hp.g_steps):
            labels = self.round_labels(self.hp.kd_batch)
            images = self.generate(self.round_latent(labels), self.round_resolution(round))
            loss = self.generator_loss(GeneratorStep(images, labels, index))
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            self.apply_gradients(params, grads, self.generator_optimizer)
        self.bn_loss.update_momentum()

    @torch.no_grad()
    def draw(self, n: int) -> SyntheticBatch:
        """n fresh images from the generator (train mode, as the references sample), detached."""
        labels = self.round_labels(n)
        images = self.generate(self.round_latent(labels), self.round_resolution(self.round))
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
