"""`GeneratorMethod`: what generator-based DFKD methods share, behind public hooks.

The base owns the generator's round loop (g_steps optimiser steps, keep-best), the BN-statistics
loss with momentum, synthesis augmentation, the one-hot / BN / adversarial terms and their warm-up
gate, and state_dict. A method changes what it needs through public hooks, the generator-side mirror
of `Method.student_loss`:

- `build_generator()`: the generator module (required);
- `round_labels(n)`, `round_latent(labels)`, `generate(latent, resolution)`: what one step draws;
- `round_resolution(round)`, `start_round(round)`: per-round choices and resets;
- `generator_terms(step)`: the weighted loss terms on one batch of new images;
- `adversarial_term(step)`: the student-vs-teacher term (default: Fast's boundary loss);
- `round_parameters(latent)`, `round_optimizer(groups)`, `apply_gradients(...)`, `end_synthesis()`:
  what a round trains, as named parameter groups, and how (Fast's meta-learning overrides these four);
- `step_loss(step, loss)`: each step's total loss, as keep-best sees it (CMI);
- `bn_loss_for(resolution)`: the BN loss of a generation resolution (MUSE keeps one per resolution);
- `compilable_modules()`: what `--compile` may compile (the generator).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar, Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import MethodHparams
from ..distributed import RunningStatistics
from ..errors import UserError
from ..models.hooks import CONV_MAP, PENULTIMATE, ForwardRecorder
from ..schedule import RoundInfo
from .generators import LatentGenerator
from .labels import random_labels
from .losses import BNStatisticsLoss, adversarial_loss
from .method import Method, MethodContext, SyntheticBatch
from .synthesis import BestIterate



ParameterGroups = dict[str, list[torch.Tensor]]        # what a round trains, by name ("generator", "latent", ...)
GradientGroups = dict[str, list["torch.Tensor | None"]]  # their gradients, named alike


def flat_parameters(groups: ParameterGroups) -> list[torch.Tensor]:
    """Every group's tensors in group order (what autograd and a single-group optimiser take)."""
    return [p for params in groups.values() for p in params]


def named_like(groups: ParameterGroups, flat: Sequence[torch.Tensor | None]) -> GradientGroups:
    """`flat` (in `flat_parameters` order) split back into the groups' names."""
    out, start = {}, 0
    for name, params in groups.items():
        out[name] = list(flat[start:start + len(params)])
        start += len(params)
    return out

@dataclass
class GeneratorHparams(MethodHparams):
    """The knobs every generator method shares: loss weights (oh: one-hot CE, bn: BN statistics,
    adv: adversarial), the BN loss's momentum, g_steps generator steps per round at lr_g (Adam,
    betas `g_betas`), synthesis augmentation and keep-best (bank the round's lowest-loss iterate)."""

    oh: float = 0.5
    bn: float = 10.0
    adv: float = 1.33
    bn_momentum: float = 0.9
    g_steps: int = 1
    lr_g: float = 1e-3
    g_betas: tuple[float, ...] = (0.5, 0.999)
    synth_augment: bool = True
    keep_best: bool = True

    def validate(self, method: str = "method") -> None:
        super().validate(method)
        if self.g_steps < 1:
            raise UserError(f"{method}.g_steps={self.g_steps}: it must be >= 1")
        for name in ("oh", "bn", "adv"):
            if getattr(self, name) < 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 0")
        if not 0 <= self.bn_momentum < 1:
            raise UserError(f"{method}.bn_momentum={self.bn_momentum}: it must be in [0, 1)")
        if len(self.g_betas) != 2:
            raise UserError(f"{method}.g_betas={self.g_betas}: give two numbers, e.g. 0.5,0.999")


@dataclass
class TeacherPass:
    """The teacher's outputs on a synthetic batch: logits, the BN-statistics loss of that forward
    (None when the method's bn weight is 0), CE to the target labels, and the last conv map (when
    `GeneratorMethod.keeps_teacher_map`)."""

    logits: torch.Tensor
    bn: torch.Tensor | None
    ce: torch.Tensor
    conv_map: torch.Tensor | None = None


@dataclass
class StudentPass:
    """The student's logits (eval mode) on a synthetic batch, with its penultimate features."""

    logits: torch.Tensor
    features: torch.Tensor | None


@dataclass
class GeneratorStep:
    """One generator step's batch. `images` are the generator's [0,1] output (with grad), `labels`
    the targets; `view` (augmented) and `inputs` (what the models see), `teacher` and `student` are
    filled by `GeneratorMethod.teacher_pass` / `student_pass`, each computed once per step."""

    images: torch.Tensor
    labels: torch.Tensor
    index: int = 0
    view: torch.Tensor | None = None
    inputs: torch.Tensor | None = None
    teacher: TeacherPass | None = None
    student: StudentPass | None = None


class GeneratorMethod(Method):
    """A bank method whose images come from a trained generator; see the module docstring for hooks."""

    Hparams: ClassVar[type[MethodHparams]] = GeneratorHparams
    hp: GeneratorHparams

    def __init__(self, ctx: MethodContext, hparams: GeneratorHparams) -> None:
        super().__init__(ctx, hparams)
        self.round = RoundInfo.standalone()
        self.bn_loss = self.keep_hook(BNStatisticsLoss(ctx.teacher, momentum=hparams.bn_momentum))
        self._teacher_tap: ForwardRecorder | None = None
        self._student_tap: ForwardRecorder | None = None
        self.generator = self.prepared_generator()

    # ----- hooks a method overrides -------------------------------------------------------------
    def build_generator(self) -> nn.Module:
        """A freshly initialised generator on the device."""
        raise NotImplementedError(f"{self.name}: a GeneratorMethod implements build_generator()")

    def start_round(self, round: RoundInfo) -> None:
        """Before a round's first step: re-initialise what the round asks for (default: nothing)."""

    def round_resolution(self, round: RoundInfo) -> int:
        """The resolution this round generates at (default: the run's one resolution)."""
        return self.ctx.resolution

    def round_labels(self, n: int) -> torch.Tensor:
        """Target labels of the round's images (default: uniformly random, drawn with the run's RNG)."""
        return random_labels(n, self.ctx.spec.num_classes, self.ctx.generator, self.ctx.device)

    def round_latent(self, labels: torch.Tensor) -> Any:
        """The generator's input for these labels (default: z ~ N(0, 1) of the generator's latent_shape)."""
        g = self.ctx.generator
        shape = getattr(self.generator, "latent_shape", None)
        if shape is None:
            raise NotImplementedError(f"{self.name}: a generator without latent_shape needs round_latent()")
        z = torch.randn(labels.shape[0], *shape, generator=g, device=g.device)
        return z.to(self.ctx.device)

    def generate(self, latent: Any, resolution: int) -> torch.Tensor:
        """Images in [0,1] from the latent (default: `self.generator(latent)`)."""
        return self.generator(latent)

    @property
    def adversarial_on(self) -> bool:
        """Whether this round's loss carries the adversarial term (default: adv > 0 after warm-up)."""
        return self.hp.adv > 0 and not self.round.in_warmup

    @property
    def keeps_teacher_map(self) -> bool:
        """Whether `teacher_pass` records the teacher's last conv map (for CAM-style terms)."""
        return False

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """The weighted generator-loss terms on one batch: bn*BN + oh*CE (+ adv*adversarial)."""
        hp = self.hp
        teacher = self.teacher_pass(step)
        terms = {} if teacher.bn is None else {"bn": hp.bn * teacher.bn}
        if hp.oh > 0:
            terms["oh"] = hp.oh * teacher.ce
        if self.adversarial_on:
            terms["adv"] = hp.adv * self.adversarial_term(step)
        return terms

    def adversarial_term(self, step: GeneratorStep) -> torch.Tensor:
        """The student-vs-teacher term the generator minimises (default: the boundary loss of Fast/NAYER)."""
        return adversarial_loss(self.student_pass(step).logits, self.teacher_pass(step).logits)

    def round_parameters(self, latent: Any) -> ParameterGroups:
        """What a round's optimiser trains, as named groups (default: {"generator": its parameters})."""
        return {"generator": list(self.generator.parameters())}

    def round_optimizer(self, groups: ParameterGroups) -> torch.optim.Optimizer:
        """A fresh optimiser for the round (default: Adam at lr_g with betas g_betas over every group)."""
        return torch.optim.Adam(flat_parameters(groups), lr=self.hp.lr_g, betas=tuple(self.hp.g_betas))

    def apply_gradients(self, groups: ParameterGroups, grads: GradientGroups, optimizer: torch.optim.Optimizer) -> None:
        """Take one optimiser step with these gradients (`grads` named as `groups`)."""
        for name, params in groups.items():
            for p, g in zip(params, grads[name]):
                p.grad = g
        optimizer.step()

    def step_generator(self, loss: torch.Tensor, groups: ParameterGroups, optimizer: torch.optim.Optimizer) -> None:
        """One generator step: the gradients of `loss` for every group (autograd.grad: no student weight
        gradients), averaged over the ranks where shared, then `apply_gradients`."""
        params = flat_parameters(groups)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        self.share_generator_gradients(params, grads)
        self.apply_gradients(groups, named_like(groups, grads), optimizer)

    def end_synthesis(self) -> None:
        """After a round's last step (before the BN momentum update); default: nothing."""

    def step_loss(self, step: GeneratorStep, loss: torch.Tensor) -> None:
        """Hook: each synthesis step's total loss, as keep-best sees it (CMI keeps the features of the
        iterate keep-best keeps); default: nothing."""

    # ----- shared pieces ------------------------------------------------------------------------
    def prepared_generator(self) -> nn.Module:
        """`build_generator()` in the run's memory format (channels_last on the GPU): use it to (re)build."""
        generator = self.build_generator()
        return generator.to(memory_format=torch.channels_last) if self.ctx.channels_last else generator

    def work_key(self, n: int, round: RoundInfo) -> tuple:
        """The default key plus the round's generation resolution (MUSE changes it round by round)."""
        return (*super().work_key(n, round), self.round_resolution(round))

    def bn_loss_for(self, resolution: int) -> BNStatisticsLoss:
        """Hook: the BN loss (with its momentum buffer) for images generated at `resolution`; default the one
        `bn_loss` (MUSE keeps one per resolution, whose BN-input statistics differ)."""
        return self.bn_loss

    def momentum_losses(self) -> list[BNStatisticsLoss]:
        """The BN losses whose momentum buffers the method keeps (default: `bn_loss`; MUSE one per resolution)."""
        return [self.bn_loss]

    def compilable_modules(self) -> dict[str, nn.Module]:
        """The generator (`--compile`)."""
        return {"generator": self.generator}

    def shared_modules(self) -> dict[str, nn.Module]:
        """The student, the generator and the momentum buffers of `momentum_losses` (once there are any)."""
        return {**super().shared_modules(), "generator": self.generator, **_momentum_buffers(self.momentum_losses())}

    def share_generator_gradients(self, params: list[torch.Tensor], grads: Sequence[torch.Tensor | None]) -> None:
        """In a process group, average over the ranks, in one collective, the gradients of every round
        parameter that belongs to a shared module (`shared_modules`: the generator, Fast's round clone,
        CMI's head), so their update is the same everywhere; each rank's share of the round gives its own
        gradients. Round tensors of no module (latents, NAYER's noisy layers) stay per rank."""
        group = self.ctx.group
        if group.active:
            shared = {id(p) for module in self.shared_modules().values() for p in module.parameters()}
            group.average_([g for p, g in zip(params, grads) if id(p) in shared])

    def generated(self, latent: Any, resolution: int) -> torch.Tensor:
        """`generate` under the run's autocast (bf16 forwards where on), returned as float32 images."""
        with self.ctx.autocast():
            return self.generate(latent, resolution).float()

    def view_of(self, step: GeneratorStep) -> torch.Tensor:
        """The step's images as the losses see them: augmented when synth_augment is on."""
        if step.view is None:
            step.view = self.synthesis_view(step.images) if self.hp.synth_augment else step.images
            step.inputs = self.model_input(step.view)
        return step.view

    def teacher_pass(self, step: GeneratorStep) -> TeacherPass:
        """The teacher's forward on the step's view (once per step): logits, BN loss, CE, conv map."""
        if step.teacher is None:
            self.view_of(step)
            ctx = self.ctx
            if self.keeps_teacher_map and self._teacher_tap is None:
                self._teacher_tap = self.keep_hook(ForwardRecorder(ctx.teacher, {"conv_map": CONV_MAP}))
            tap = self._teacher_tap if self.keeps_teacher_map else None
            bn_loss = self.bn_loss_for(step.images.shape[-1])
            with bn_loss.collect() if self.hp.bn > 0 else nullcontext(), \
                    tap.capture() if tap is not None else nullcontext(), ctx.autocast():
                logits = ctx.teacher(step.inputs).float()
            bn = bn_loss() if self.hp.bn > 0 else None
            step.teacher = TeacherPass(logits, bn, F.cross_entropy(logits, step.labels),
                                       tap.latest("conv_map") if tap is not None else None)
        return step.teacher

    def student_pass(self, step: GeneratorStep) -> StudentPass:
        """The student's forward on the step's inputs in eval mode (its BN statistics stay put), once."""
        if step.student is None:
            self.view_of(step)
            ctx = self.ctx
            if self._student_tap is None:
                self._student_tap = self.keep_hook(ForwardRecorder(ctx.student, {"penultimate": PENULTIMATE}))
            was_training = ctx.student.training
            ctx.student.eval()
            with self._student_tap.capture() as tap, ctx.autocast():
                logits = ctx.student(step.inputs).float()
            ctx.student.train(was_training)
            step.student = StudentPass(logits, tap.latest("penultimate"))
        return step.student

    def generator_loss(self, step: GeneratorStep) -> torch.Tensor:
        """The sum of `generator_terms`, each term kept for live tracking."""
        return sum(self.record_terms("synth", self.generator_terms(step)).values())

    def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
        """One round: g_steps optimiser steps on `round_parameters`, then the kept batch (the lowest-loss
        iterate under keep_best, else the last). Gradients are taken for those parameters only
        (autograd.grad), so synthesis computes no student weight gradients."""
        hp = self.hp
        self.round = round or RoundInfo.standalone(images=n)
        self.start_round(self.round)
        resolution = self.round_resolution(self.round)
        labels = self.round_labels(n)
        latent = self.round_latent(labels)
        groups = self.round_parameters(latent)
        optimizer = self.round_optimizer(groups)
        best = BestIterate()
        self.generator.train()
        for index in range(hp.g_steps):
            images = self.generated(latent, resolution)
            step = GeneratorStep(images, labels, index)
            loss = self.generator_loss(step)
            self.step_loss(step, loss)
            if hp.keep_best:
                best.update(loss, images)
            self.step_generator(loss, groups, optimizer)
        self.end_synthesis()
        self.bn_loss_for(resolution).update_momentum()
        if hp.keep_best:
            return SyntheticBatch(best.images[:n], labels[:n], best.kept_loss)
        return SyntheticBatch(images.detach()[:n], labels[:n], loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "generator": self.generator.state_dict(), "bn_loss": self.bn_loss.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.generator.load_state_dict(state["generator"])
        self.bn_loss.load_state_dict(state["bn_loss"])


def _momentum_buffers(losses: Iterable[BNStatisticsLoss]) -> dict[str, nn.Module]:
    """{"bn_momentum": the EMA buffers of these BN losses} for `shared_modules` (each rank moves them on
    its own images, so the ranks average them after each round); {} while none has buffers yet."""
    tensors = [t for loss in losses for t in (*(loss.ema_mean or ()), *(loss.ema_var or ()))]
    return {"bn_momentum": RunningStatistics(tensors)} if tensors else {}


@dataclass
class LatentHparams(GeneratorHparams):
    """The DataFree CIFAR generator's size: latent nz, width ngf."""

    nz: int = 256
    ngf: int = 64

    def validate(self, method: str = "method") -> None:
        super().validate(method)
        for name in ("nz", "ngf"):
            if getattr(self, name) < 1:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 1")


class LatentGeneratorMethod(GeneratorMethod):
    """A GeneratorMethod on the DataFree CIFAR generator (`LatentGenerator`: z of nz -> Linear -> two
    upsamplings), which the Fast, CMI, DAFL, DFQ, DFAD and ZSKT references share; its hparams extend
    `LatentHparams`. Combine with `OnlineGeneratorMethod` for an online method."""

    hp: LatentHparams

    @classmethod
    def check_resolution(cls, resolution: int) -> None:
        """The generator quadruples an (r/4)x(r/4) map, so r must be a multiple of 4."""
        if resolution % 4:
            raise UserError(f"generation resolution {resolution}: {cls.name} generates at multiples of 4 only")

    def build_generator(self) -> nn.Module:
        """The CIFAR generator at the run's resolution."""
        hp, ctx = self.hp, self.ctx
        return LatentGenerator(hp.nz, hp.ngf, ctx.resolution, ctx.spec.in_chans).to(ctx.device)
