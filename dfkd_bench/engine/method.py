"""The method interface: a method owns how images are synthesised and any extra student loss.

A method declares what it can do as class attributes (`multi_resolution`, `sample_source`) and
class methods (`default_resolutions`, `check_resolution`); the runner validates a run against them
before any work starts, never by probing for attributes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Sequence, TypeVar

import torch
import torch.nn as nn

from ..config import MethodHparams
from ..data.spec import DatasetSpec
from ..distributed import SINGLE, Group
from ..errors import UserError
from ..schedule import RoundInfo
from .augment import Augment, Normalize, default_augment
from .bank import resize
from .losses import kd_loss
from .precision import AMP_MODES, PHASES, PhaseDtypes, amp_dtype_for, phase_dtypes  # noqa: F401  (re-exported)

HookT = TypeVar("HookT")
SAMPLE_SOURCES = ("bank", "online")


@dataclass
class SyntheticBatch:
    """Images in [0,1] at the method's native resolution, their target labels, and the kept loss.

    `kept_loss` may stay a tensor on the device: the engine reads it once per round (`loss`), so a
    synthesis round never waits for the device to report it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    kept_loss: torch.Tensor | float | None = None

    @property
    def loss(self) -> float | None:
        """The kept loss as a Python float (a host read of a device value)."""
        return None if self.kept_loss is None else float(self.kept_loss)


@dataclass
class StudentStep:
    """One student step's batch as `Method.student_loss` sees it (torchdistill-style explicit outputs).

    `inputs` is what both models saw (augmented, resized, normalised); `features` holds the student's
    penultimate features of the forward that gave `s_logits`, when the method's
    `needs_student_features` is true (None otherwise).
    """

    inputs: torch.Tensor
    labels: torch.Tensor
    s_logits: torch.Tensor
    t_logits: torch.Tensor
    features: torch.Tensor | None = None


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
    amp_dtype: torch.dtype | None = None  # the forwards' autocast dtype now (the phase's: see `in_phase`)
    channels_last: bool = False
    phase_dtypes: PhaseDtypes = field(default_factory=dict)  # each phase's autocast dtype (engine.precision)
    label_embeddings_loader: Callable[[], torch.Tensor] | None = field(default=None, repr=False)
    group: Group = SINGLE  # the run's process group (one process unless torchrun started several)
    seed: int = 0          # the run's seed, the same on every rank (the generator's stream is per rank)
    _label_embeddings: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def create(cls, teacher: nn.Module, student: nn.Module, spec: DatasetSpec, seed: int,
               resolutions: Sequence[int] | None = None, device: torch.device | str = "cpu",
               amp: str = "auto", label_embeddings_loader: Callable[[], torch.Tensor] | None = None,
               channels_last: bool | None = None, group: Group = SINGLE,
               auto_phases: tuple[str, ...] = PHASES) -> "MethodContext":
        """The one way to build a context (runner, benchmarks, tests): models moved to the device (and to
        channels_last, by default on CUDA and under bf16), the run's RNG seeded, and bf16 autocast for each
        phase's forwards where `phase_dtypes(amp, device, auto_phases)` says so (engine.precision: auto where
        the device computes bf16 natively, in the phases the method lets it; bf16 everywhere; off: fp32).
        Outside a KD block (`in_phase("kd")`) the synthesis precision holds. In a process group each rank's
        RNG stream is seeded apart (`Group.seed`)."""
        device = torch.device(device)
        dtypes = phase_dtypes(amp, device, auto_phases)
        bf16 = any(dtype is not None for dtype in dtypes.values())
        channels_last = (device.type == "cuda" or bf16) if channels_last is None else channels_last
        teacher, student = teacher.to(device), student.to(device)
        if channels_last:
            teacher = teacher.to(memory_format=torch.channels_last)
            student = student.to(memory_format=torch.channels_last)
        return cls(teacher=teacher, student=student, spec=spec, device=device,
                   generator=torch.Generator(device=device).manual_seed(group.seed(seed)),
                   resolutions=tuple(resolutions or (spec.input_size,)),
                   normalize=Normalize(spec.mean, spec.std).to(device),
                   amp_dtype=dtypes["synth"], channels_last=channels_last, phase_dtypes=dtypes,
                   label_embeddings_loader=label_embeddings_loader, group=group, seed=seed)

    @property
    def resolution(self) -> int:
        """The (first) generation resolution."""
        return self.resolutions[0]

    @contextlib.contextmanager
    def in_phase(self, phase: str) -> Iterator[None]:
        """The forwards inside the block run in `phase`'s precision ("synth" or "kd": the engine's student
        steps run in "kd")."""
        saved = self.amp_dtype
        self.amp_dtype = self.phase_dtypes.get(phase, saved)
        try:
            yield
        finally:
            self.amp_dtype = saved

    def autocast(self) -> contextlib.AbstractContextManager:
        """bf16 autocast of the forwards when the run has it on (see `create`); a no-op otherwise."""
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
    """Base class of every DFKD method; subclasses set `Hparams` and implement `synthesize` (a bank
    method) or `train_generator` and `draw` (an online method, `sample_source = "online"`).

    The engine owns rounds, the bank, the student's optimiser and steps, evaluation, timing and
    checkpoints. Bank methods: `synthesize(n, round)` once a round, the images banked, then student
    steps on bank batches. Online methods: each student step trains on `draw(kd_batch)`, fresh
    generator output, with `train_generator(round)` before every `student_steps_per_generator_step`
    steps. Every student step's loss is `student_loss(step)`.
    """

    name: ClassVar[str] = ""
    Hparams: ClassVar[type[MethodHparams]] = MethodHparams
    multi_resolution: ClassVar[bool] = False    # can one run generate at several resolutions
    sample_source: ClassVar[str] = "bank"       # "bank" or "online" (see the class docstring)
    auto_bf16_phases: ClassVar[tuple[str, ...]] = PHASES  # the phases `--amp auto` may run in bf16

    def __init__(self, ctx: MethodContext, hparams: MethodHparams) -> None:
        self.ctx = ctx
        self.hp = hparams
        self._hooks: list[Any] = []
        self._augments: dict[str, Augment] = {}
        self.loss_terms: dict[str, torch.Tensor] = {}  # the latest value of each loss term, for live tracking

    @classmethod
    def default_resolutions(cls, spec: DatasetSpec) -> tuple[int, ...]:
        """The generation resolution(s) a run uses without `--resolution`: the teacher's input size."""
        return (spec.input_size,)

    @classmethod
    def check_resolution(cls, resolution: int) -> None:
        """Raise a one-line UserError for a generation resolution this method cannot make (default: any)."""

    @classmethod
    def check_resolutions(cls, resolutions: Sequence[int]) -> None:
        """Refuse several resolutions for a single-resolution method, then check each one."""
        if len(resolutions) > 1 and not cls.multi_resolution:
            raise UserError(f"--multi-resolution {','.join(map(str, resolutions))}: {cls.name} generates at one "
                            f"resolution; give one with --resolution N")
        for r in resolutions:
            cls.check_resolution(r)

    @property
    def needs_student_features(self) -> bool:
        """True when `student_loss` reads `step.features` (the engine then records them)."""
        return False

    @property
    def student_steps_per_generator_step(self) -> int:
        """Online methods: student steps between two `train_generator` calls."""
        return 1

    def record_terms(self, phase: str, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Keep each term's latest value (detached, on the device: no host sync) as `phase/name`, for
        `--log` trackers to read at round boundaries; returns `terms` unchanged."""
        for name, value in terms.items():
            self.loss_terms[f"{phase}/{name}"] = value.detach()
        return terms

    def keep_hook(self, hooks: HookT) -> HookT:
        """Remember an object holding forward hooks (a `ForwardRecorder`, a `BNStatisticsLoss`: it has
        `close()`) so the method's `close()` detaches it."""
        self._hooks.append(hooks)
        return hooks

    def close(self) -> None:
        """Detach every kept hook from the shared teacher and the student (called after a run)."""
        for hooks in self._hooks:
            hooks.close()
        self._hooks.clear()

    @property
    def feed_size(self) -> int | None:
        """Size at which teacher and student see synthetic images (None: as generated)."""
        return self.ctx.spec.input_size

    def model_input(self, images: torch.Tensor) -> torch.Tensor:
        """[0,1] images resized to `feed_size` and normalised: what teacher and student both see."""
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

    def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
        """Bank methods: make `n` new images for `round` (None: a standalone post-warm-up round)."""
        raise NotImplementedError(f"{self.name}: a bank method implements synthesize(n, round)")

    def train_generator(self, round: RoundInfo) -> None:
        """Online methods: update the generator before the next student steps."""
        raise NotImplementedError(f"{self.name}: an online method implements train_generator(round)")

    def draw(self, n: int) -> SyntheticBatch:
        """Online methods: `n` fresh, detached images in [0,1] and their labels for one student step."""
        raise NotImplementedError(f"{self.name}: an online method implements draw(n)")

    def student_loss(self, step: StudentStep) -> dict[str, torch.Tensor]:
        """Terms of the student's loss on one batch; the default is KD at temperature T."""
        return {"kd": kd_loss(step.s_logits, step.t_logits, self.hp.temperature)}

    def work_key(self, n: int, round: RoundInfo) -> tuple:
        """What sets the cost of a synthesis round of `n` images: rounds with equal keys do the same
        FLOPs, so the engine counts each key once (default: n, warm-up or not, first round or not)."""
        return (n, round.in_warmup, round.index == 0)

    def student_parameters(self) -> list[nn.Parameter]:
        """Extra trainable parameters that the student optimiser must update (e.g. a projection head)."""
        return []

    def compilable_modules(self) -> dict[str, nn.Module]:
        """The method's own modules `--compile` may compile besides the teacher and the student (declared,
        never probed): none here; a generator method adds its generator."""
        return {}

    def shared_modules(self) -> dict[str, nn.Module]:
        """The named modules every rank of a process group must hold bit-identical (checked after each round;
        a generator method averages the gradients of their parameters): the student here; subclasses add
        theirs (generator, heads, `RunningStatistics`). Per-rank state (latents, pixels) is left out."""
        return {"student": self.ctx.student}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume; subclasses add their generators and optimisers."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
