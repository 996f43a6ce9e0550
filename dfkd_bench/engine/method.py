"""The method interface: a method owns how images are synthesised and any extra student loss."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, TypeVar

import torch
import torch.nn as nn

from ..config import MethodHparams
from ..data.spec import DatasetSpec
from .augment import Augment, Normalize, default_augment
from .bank import resize
from .losses import kd_loss
from ..schedule import RoundInfo


HookT = TypeVar("HookT")


@dataclass
class SyntheticBatch:
    """Images in [0,1] at the method's native resolution, their target labels, and the kept loss."""

    images: torch.Tensor
    labels: torch.Tensor
    loss: float | None = None


@dataclass
class MethodContext:
    """What a method may use: frozen teacher, the student, the dataset spec, device, RNG, AMP."""

    teacher: nn.Module
    student: nn.Module
    spec: DatasetSpec
    device: torch.device
    generator: torch.Generator
    resolutions: tuple[int, ...]
    normalize: Normalize
    amp_dtype: torch.dtype | None = None
    channels_last: bool = False
    label_embeddings_loader: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    _label_embeddings: torch.Tensor | None = field(default=None, repr=False)

    @property
    def resolution(self) -> int:
        """The (first) generation resolution."""
        return self.resolutions[0]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision on CUDA when enabled; a no-op elsewhere."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def label_embeddings(self) -> torch.Tensor:
        """The dataset's label-text embeddings f_y, (C, D) on the device, loaded on first use."""
        if self._label_embeddings is None:
            if self.label_embeddings_loader is None:
                raise RuntimeError("this run has no label embeddings")
            self._label_embeddings = self.label_embeddings_loader().to(self.device)
        return self._label_embeddings


class Method:
    """Base class of every DFKD method; subclasses implement `synthesize` and set `Hparams`.

    The engine owns rounds, the bank, the KD loop, evaluation, timing and checkpoints; it calls
    `synthesize(n)` once a round, `student_loss` on every student step, and `end_round()` after.
    """

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[MethodHparams]] = MethodHparams

    def __init__(self, ctx: MethodContext, hparams: MethodHparams) -> None:
        self.ctx = ctx
        self.hp = hparams
        self.rounds_done = 0
        self.round = RoundInfo(index=0, epoch=0, images=0, warmup=hparams.warmup_rounds > 0, kd_steps=0)
        self._hooks: list[Any] = []
        self._augments: dict[str, Augment] = {}
        self.loss_terms: dict[str, torch.Tensor] = {}  # the latest value of each loss term, for live tracking

    def record_terms(self, phase: str, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep each term's latest value (detached, on the device: no host sync) as `phase/name`, for
        `--log` trackers to read at round boundaries; returns `terms` unchanged."""
        for name, value in terms.items():
            self.loss_terms[f"{phase}/{name}"] = value.detach()
        return terms

    def track(self, hooks: HookT) -> HookT:
        """Remember an object holding forward hooks (it has `remove()`) so `close()` detaches it."""
        self._hooks.append(hooks)
        return hooks

    def close(self) -> None:
        """Detach every tracked hook from the shared teacher and the student (called after a run)."""
        for hooks in self._hooks:
            hooks.remove()
        self._hooks.clear()

    @property
    def in_warmup(self) -> bool:
        """True during the rounds that synthesise without KD (adversarial terms stay off)."""
        return self.round.warmup

    def begin_round(self, info: RoundInfo) -> None:
        """Called by the engine before each round's `synthesize`, with what the schedule decided."""
        self.round = info

    @property
    def feed_size(self) -> int | None:
        """Size at which teacher and student see synthetic images (None: as generated)."""
        return self.ctx.spec.input_size

    def teacher_input(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images resized to `feed_size` and normalised, ready for teacher or student."""
        if self.feed_size is not None:
            images = resize(images, self.feed_size)
        x = self.ctx.normalize(images)
        return x.contiguous(memory_format=torch.channels_last) if self.ctx.channels_last else x

    def augmentation(self, phase: str) -> Augment:
        """The phase's augmentation ("synthesis" or "kd"): the hyper-parameter if set, else the
        references' for the dataset's size (engine.augment.default_augment)."""
        if phase not in self._augments:
            text = self.hp.synth_aug if phase == "synthesis" else self.hp.kd_aug
            spec = self.ctx.spec
            self._augments[phase] = Augment(text or default_augment(spec.input_size, phase), spec.input_size,
                                            spec.hflip)
        return self._augments[phase]

    def synthesis_view(self, images: torch.Tensor) -> torch.Tensor:
        """New images as the generator loss sees them (augmented for the synthesis phase)."""
        return self.augmentation("synthesis")(images, self.ctx.generator)

    def synthesize(self, n: int) -> SyntheticBatch:
        """Make `n` new images (the budget's next share)."""
        raise NotImplementedError

    def student_loss(self, images: torch.Tensor, labels: torch.Tensor,
                     s_logits: torch.Tensor, t_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Terms of the student's loss on a bank batch; the default is KD at temperature T."""
        return {"kd": kd_loss(s_logits, t_logits, self.hp.temperature)}

    def student_parameters(self) -> list[nn.Parameter]:
        """Extra trainable parameters that the student optimiser must update (e.g. a projection head)."""
        return []

    def end_round(self) -> None:
        """Called by the engine after each round's synthesis (and KD)."""
        self.rounds_done += 1

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; subclasses add their generators and optimisers."""
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_done = state["rounds_done"]
