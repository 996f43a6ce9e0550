"""`OnlineGeneratorMethod`: methods whose student trains on fresh generator output at every step
(DAFL, ZSKT, DFAD, DFQ) instead of on a bank.

The budget stays the suite's one quantity: a run at ratio r lets the student see r x train_size
distinct synthetic images, drawn fresh from the generator in round(r x train_size / kd_batch) batches
of kd_batch. `budget` says how many student steps they feed (the schedule policy,
`schedule.plan_schedule`, lays them out):

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

Under `--protocol paper` the run is the reference script's instead (`online_paper_schedule`): its epochs of
KD steps, each step on a fresh batch, the student's cosine stepped once an epoch; the ratio picks how
many epochs, as for bank methods.

Two settings follow the reference code per method: `sample_mode`, the generator's mode when it draws
the student's images ("eval": DataFree's `GenerativeSynthesizer.sample()`, normalised with the
generator's BN running statistics; "train": batch statistics, as VainF's DFAD and polo5's ZSKT code
sample), and `student_criterion` ("kl": KL at T 1, DataFree's criterion for DAFL, DFQ and ZSKT; "l1":
the mean absolute logit difference, its criterion for DFAD; "kd": the suite's KD at `temperature`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MethodHparams
from ..distributed import running_statistics
from ..errors import UserError
from ..schedule import BUDGETS, ReferenceSchedule, RoundInfo
from .generator_method import GeneratorHparams, GeneratorMethod, GeneratorStep, LatentGeneratorMethod, LatentHparams
from .generators import LatentGenerator
from .losses import kd_loss
from .method import MethodContext, StudentStep, SyntheticBatch

DATAFREE_LOOP = ("datafree_kd.py: 200 epochs x 400 KD steps (--epochs 200 --ep_steps 400), a fresh batch each, "
                 "SGD momentum 0.9 wd 1e-4, cosine to 0 stepped once an epoch, eval-mode sampling")
SAMPLE_MODES = ("eval", "train")
STUDENT_CRITERIA = ("kl", "l1", "kd")


def datafree_schedules(cifar10: str, cifar100: str = "") -> dict[str, ReferenceSchedule]:
    """`--protocol paper` for an online method as zju-vipa/DataFree's loop runs it (`DATAFREE_LOOP`):
    `cifar10` names the CIFAR-10 script and what it sets; CIFAR-100 runs `cifar100`, or, where DataFree
    has no CIFAR-100 script, the CIFAR-10 one (said in the row's note)."""
    def entry(script: str, note: str = "") -> ReferenceSchedule:
        return ReferenceSchedule(warmup_epochs=0, kd_steps_per_epoch=400, reference_epochs=200,
                                 source=f"zju-vipa/DataFree {script}; {DATAFREE_LOOP}", note=note)
    fallback = "DataFree has no CIFAR-100 script: the CIFAR-10 one"
    return {"cifar10": entry(cifar10), "cifar100": entry(cifar100) if cifar100 else entry(cifar10, fallback)}


def logit_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's model discrepancy: the mean absolute (L1) difference of the logits, over batch and classes."""
    return F.l1_loss(student_logits.float(), teacher_logits.float())


def student_criterion_loss(criterion: str, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                           temperature: float) -> torch.Tensor:
    """The student's loss under `criterion`: "kl" KL(p_t || p_s) at T 1 (batch mean), "l1" the logit
    discrepancy, "kd" T^2 KL at `temperature`."""
    if criterion == "l1":
        return logit_discrepancy(student_logits, teacher_logits)
    return kd_loss(student_logits, teacher_logits, 1.0 if criterion == "kl" else temperature)


@dataclass
class OnlineHparams(GeneratorHparams):
    """GeneratorHparams plus the online loop: s_steps student steps per generator phase, round_steps
    student steps per round, the budget ("images", "fresh" or "steps": see the module docstring), the
    generator's mode when drawing for the student (`sample_mode`) and the student's loss
    (`student_criterion`). No warm-up, no bank, no synthesis augmentation, keep-best or BN term by
    default (DFQ turns bn on)."""

    SAMPLE_SOURCE: ClassVar[str] = "online"

    s_steps: int = 1
    round_steps: int = 50
    budget: str = "images"
    paper_steps: int = 0
    sample_mode: str = "eval"
    student_criterion: str = "kl"
    bn: float = 0.0
    synth_augment: bool = False
    keep_best: bool = False
    bn_momentum: float = 0.0
    kd_aug: str = "none"

    def validate(self, method: str = "method") -> None:
        super().validate(method)
        self.check_choice(method, "budget", self.budget, BUDGETS)
        self.check_choice(method, "sample_mode", self.sample_mode, SAMPLE_MODES)
        self.check_choice(method, "student_criterion", self.student_criterion, STUDENT_CRITERIA)
        for name in ("s_steps", "round_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 1")
        if self.budget == "steps" and self.paper_steps < 1:
            raise UserError(f"{method}.budget=steps needs {method}.paper_steps >= 1 (the paper's student steps); "
                            f"this preset has none")

    def student_loss_label(self) -> str:
        """The student's loss as the run's plan names it (`student_criterion`)."""
        if self.student_criterion == "kl":
            return "KL at T=1"
        if self.student_criterion == "l1":
            return "L1 between logits (mean)"
        return super().student_loss_label()


@dataclass
class OnlineLatentHparams(OnlineHparams, LatentHparams):
    """OnlineHparams on the CIFAR latent generator: nz, ngf, and `stem`, its first stage's width in
    multiples of ngf (4: DataFree's `LargeGenerator`, which its DAFL, DFQ, ZSKT and DFAD use; 2: Fast's)."""

    stem: int = 4

    def validate(self, method: str = "method") -> None:
        super().validate(method)
        if self.stem < 1:
            raise UserError(f"{method}.stem={self.stem}: it must be >= 1")


class OnlineGeneratorMethod(GeneratorMethod):
    """A generator method on the online sample source: `train_generator` and `draw` replace `synthesize`."""

    Hparams: ClassVar[type[MethodHparams]] = OnlineHparams
    hp: OnlineHparams
    sample_source: ClassVar[str] = "online"

    def __init__(self, ctx: MethodContext, hparams: OnlineHparams) -> None:
        super().__init__(ctx, hparams)
        self.generator_optimizer = self.round_optimizer({"generator": list(self.generator.parameters())})

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
        groups = {"generator": list(self.generator.parameters())}
        for index in range(self.hp.g_steps):
            labels = self.round_labels(self.ctx.group.share(self.hp.kd_batch))
            images = self.generated(self.round_latent(labels), self.round_resolution(round))
            loss = self.generator_loss(GeneratorStep(images, labels, index))
            self.step_generator(loss, groups, self.generator_optimizer)
        self.share_generator_statistics()
        self.bn_loss_for(self.round_resolution(round)).update_momentum()

    def share_generator_statistics(self) -> None:
        """In a process group, average the generator's BN running statistics over the ranks (each rank's
        train-mode forwards moved them on its own share), so eval-mode draws normalise alike everywhere."""
        self.ctx.group.average_(running_statistics([self.generator]))

    @torch.no_grad()
    def draw(self, n: int) -> SyntheticBatch:
        """n fresh images from the generator in `sample_mode` (eval: BN running statistics, as DataFree's
        `sample()`; train: batch statistics), detached; the generator's mode is restored after."""
        labels = self.round_labels(n)
        was_training = self.generator.training
        self.generator.train(self.hp.sample_mode == "train")
        try:
            images = self.generated(self.round_latent(labels), self.round_resolution(self.round))
        finally:
            self.generator.train(was_training)
        return SyntheticBatch(images.detach(), labels)

    def student_loss(self, step: StudentStep) -> dict[str, torch.Tensor]:
        """The `student_criterion` loss on the step's fresh images, named after it ("kl", "l1" or "kd")."""
        hp = self.hp
        return {hp.student_criterion: student_criterion_loss(hp.student_criterion, step.s_logits, step.t_logits,
                                                             hp.temperature)}

    def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
        """`n` images after one generator phase (for inspection; the engine calls train_generator/draw)."""
        self.train_generator(round or RoundInfo.standalone(images=n))
        return self.draw(n)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator_optimizer": self.generator_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])


class OnlineLatentGeneratorMethod(LatentGeneratorMethod, OnlineGeneratorMethod):
    """An online method on the CIFAR latent generator at width `stem` (DAFL, DFQ, ZSKT, DFAD); its
    hparams extend `OnlineLatentHparams`."""

    hp: OnlineLatentHparams

    def build_generator(self) -> nn.Module:
        """The latent generator at the run's resolution with the hparams' first-stage width."""
        hp, ctx = self.hp, self.ctx
        return LatentGenerator(hp.nz, hp.ngf, ctx.resolution, ctx.spec.in_chans, hp.stem).to(ctx.device)
