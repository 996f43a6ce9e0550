"""A run's configuration resolved before any work starts: defaults filled in, the arguments checked
before any data is read, then the data root, the memory estimate and the schedule (a `ResolvedRun`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch

from . import distributed
from .config import MethodHparams, hparams_dict, resolve_hparams
from .options import OPTIONS, RunConfig, hparam_overrides, run_identity, stable_hash
from .data import DATA_ENV, DataSource, DatasetSpec, get_dataset
from .data.imagenet_classes import imagenet_descriptions, read_wnid_file
from .engine import Method
from .engine.bank import bank_gpu_budget
from .engine.precision import parse_amp, precision_id
from .errors import UserError
from .models import MODELS
from .plugins import METHODS
from .schedule import PROTOCOLS, ReferenceSchedule, Schedule, plan_schedule
from .teachers import RUN_ARCH_FLAG, check_checkpoint, torchvision_weights


AUTO_BATCH_FLOOR = 4  # --auto-batch stops halving before a synthesis or student batch would go below this


@dataclass
class RunArguments:
    """What a RunConfig decides on its own: its defaults filled in and checked before any data is read."""

    config: RunConfig
    spec: DatasetSpec
    method_cls: type[Method]
    hparams: MethodHparams
    teacher: str
    student: str
    resolutions: tuple[int, ...]
    device: torch.device
    world_size: int  # processes the run is data-parallel over (torchrun / --nproc)


@dataclass
class ResolvedRun(RunArguments):
    """A RunConfig with every default filled in, validated before any work starts."""

    n_synthetic: int
    source: DataSource | None
    schedule: Schedule
    halvings: int = 0  # --auto-batch: how many times the batch sizes were halved after running out of memory

    @property
    def run_hparams(self) -> MethodHparams:
        """The hyper-parameters the run executes with: the requested ones at the current batch sizes."""
        hp = self.hparams
        for _ in range(self.halvings):
            hp = hp.halved()
        return hp

    def can_halve(self) -> bool:
        """Whether `--auto-batch` may halve the batch sizes once more without going below its floor."""
        hp = self.run_hparams
        return min(hp.synth_batch, hp.kd_batch) // 2 >= AUTO_BATCH_FLOOR

    def with_halvings(self, halvings: int) -> "ResolvedRun":
        """The same run (same run_id) at batch sizes halved `halvings` times, its schedule rebuilt."""
        moved = replace(self, halvings=halvings)
        train_size = self.source.train_size if self.source else self.spec.train_size
        return replace(moved, schedule=build_schedule(self.config, self.method_cls, self.spec, moved.run_hparams,
                                                      train_size))

    @property
    def resolution_label(self) -> str:
        return "+".join(str(r) for r in self.resolutions)

    def option_values(self) -> dict[str, Any]:
        """Every run option as the run uses it, keyed as the run id keys it: the dataset, teacher, student,
        device and generation resolutions resolved, the ratio and time budget as floats."""
        c = self.config
        resolved = {name: getattr(c, name) for name in OPTIONS}
        resolved.update(dataset=self.spec.name, teacher=self.teacher, student=self.student, ratio=float(c.ratio),
                        resolution=list(self.resolutions), device=self.device.type,
                        time_budget=float(c.time_budget) if c.time_budget else None)
        return {OPTIONS[name].id_key or name: value for name, value in resolved.items()}

    def identity(self) -> dict[str, Any]:
        """What defines the run (hashed into run_id): the method, the options that name a run, its
        hyper-parameters and, when data-parallel, its world size."""
        values = self.option_values()
        by_name = {name: values[OPTIONS[name].id_key or name] for name in OPTIONS}
        return {"method": self.method_cls.name, **run_identity({**by_name, "amp": self.precision_label()}),
                "hparams": hparams_dict(self.hparams),
                **({"world_size": self.world_size} if self.world_size > 1 else {})}

    def precision_label(self) -> str | None:
        """The run id's `amp` entry (`engine.precision.precision_id`): None at the device type's reference
        precision (CUDA: bf16 autocast; CPU: fp32), so those runs keep their ids whatever `--amp auto`
        picks; else the precision actually used, per phase where the phases differ."""
        return precision_id(self.config.amp, self.device, self.method_cls.auto_bf16_phases)

    @property
    def run_id(self) -> str:
        """<method>-<dataset>-r<ratio>-<res>px[-b<budget>s]-s<seed>-<hash of everything but the seed>, so
        runs that differ only in seed share the hash (the report groups seeds by it)."""
        c = self.config
        variant = {k: v for k, v in self.identity().items() if k != "seed"}
        budget = f"-b{c.time_budget:g}s" if c.time_budget else ""
        return f"{self.method_cls.name}-{self.spec.name}-r{c.ratio:g}-{self.resolution_label}px{budget}-s{c.seed}-" \
               f"{stable_hash(variant, 8)}"


def pick_device(name: str) -> torch.device:
    """auto -> cuda when available, else cpu; asking for cuda without one is an error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available; choose from: auto, cpu")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; choose from: auto, cpu, cuda")
    if name == "cuda" and distributed.launched_by_torchrun():
        return torch.device("cuda", distributed.local_rank())  # one GPU per process
    return torch.device(name)


Sources = dict[tuple[str, str | None], DataSource]


def dataset_spec(name: str, classes: str | None = None) -> DatasetSpec:
    """The registered dataset, restricted to the wnids of a `--classes` file when one is given."""
    spec = get_dataset(name)
    if classes:
        wnids = read_wnid_file(classes)
        names = imagenet_descriptions()
        spec = spec.with_classes(wnids, tuple(names.get(w, w).split(",")[0] for w in wnids))
    return spec


def open_source(spec: DatasetSpec, data_root: str | None, sources: Sources | None = None) -> DataSource:
    """Check the data root once per (dataset, root) and keep its source (counts are reused)."""
    key = (spec.name, data_root)
    if sources is not None and key in sources:
        return sources[key]
    source = spec.open(data_root)
    if sources is not None:
        sources[key] = source
    return source


def memory_budget_bytes(device: torch.device) -> int:
    """Half the device's memory (GPU) or of the machine's RAM: what a synthetic bank may take there."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory // 2
    return host_memory_budget_bytes()


def host_memory_budget_bytes() -> int:
    """Half the machine's RAM: what the bank's host tier may take."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def device_bank_budget(config: RunConfig, device: torch.device) -> int | None:
    """Bytes the uint8 bank may hold on the device before its host tier takes over: --bank-gpu-gb, else
    half the GPU's memory; None (no tier) on the CPU, where the bank already is in host memory."""
    if device.type != "cuda":
        return None
    chosen = bank_gpu_budget(config.bank_gpu_gb)
    return chosen if chosen is not None else memory_budget_bytes(device)


def bank_bytes(n_synthetic: int, in_chans: int, resolutions: tuple[int, ...]) -> int:
    """Upper estimate of a uint8 bank of n images at the largest generation resolution."""
    return n_synthetic * in_chans * max(resolutions) ** 2


def check_bank_fits(n_synthetic: int, in_chans: int, resolutions: tuple[int, ...], device: torch.device) -> None:
    """Refuse, before any work, a budget whose uint8 bank cannot fit in memory, with the estimate. A bank
    larger than its GPU share moves to the host tier, so what must fit is the host's share of RAM."""
    estimate = bank_bytes(n_synthetic, in_chans, resolutions)
    budget = max(memory_budget_bytes(device), host_memory_budget_bytes())
    if estimate > budget:
        raise UserError(f"a bank of {n_synthetic} synthetic images at {max(resolutions)} px needs about "
                        f"{estimate / 2**30:.1f} GiB (uint8) but the memory budget is {budget / 2**30:.1f} "
                        f"GiB (half the RAM); lower --ratio or the generation resolution (--resolution)")


def reference_schedule(method_cls: type[Method], spec: DatasetSpec) -> ReferenceSchedule | None:
    """The method's reference schedule for the dataset's first preset name that has one."""
    return next((method_cls.Hparams.PAPER[n] for n in spec.preset_names if n in method_cls.Hparams.PAPER), None)


def planned_images(config: RunConfig, hparams: MethodHparams, train_size: int) -> int:
    """The synthetic images a run's ratio asks for (smoke: a tiny fixed budget, warm-up plus a couple
    of KD rounds, whatever the ratio)."""
    if config.smoke:
        return hparams.synth_batch * hparams.SMOKE_ROUNDS
    return max(1, round(config.ratio * train_size))


def protocol_reference(config: RunConfig, method_cls: type[Method], spec: DatasetSpec) -> ReferenceSchedule | None:
    """The reference schedule the run's rounds follow, judged from the arguments alone: refuses an
    unknown protocol, and `paper` for a method without a reference schedule for the dataset."""
    if config.protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {config.protocol!r}; choose from: {', '.join(PROTOCOLS)}")
    reference = reference_schedule(method_cls, spec)
    if config.protocol == "paper" and not config.smoke and reference is None:
        have = sorted(method_cls.Hparams.PAPER) or ["none"]
        raise UserError(f"--protocol paper: {method_cls.name} has no reference schedule for {spec.name}; "
                        f"it has one for: {', '.join(have)}")
    return reference


def build_schedule(config: RunConfig, method_cls: type[Method], spec: DatasetSpec, hparams: MethodHparams,
                   train_size: int) -> Schedule:
    """The run's rounds under its protocol; `paper` needs the method's reference schedule for the dataset."""
    reference = protocol_reference(config, method_cls, spec)
    n_total = planned_images(config, hparams, train_size)
    return plan_schedule(config.protocol, hparams, n_total, reference, smoke=config.smoke)


def generation_resolutions(config: RunConfig, method_cls: type[Method], spec: DatasetSpec) -> tuple[int, ...]:
    """The run's generation resolution(s), each in range and one the method can make; a refusal names
    the option that gave it (--multi-resolution or --resolution)."""
    if config.multi_resolution:
        resolutions, flag = tuple(int(r) for r in config.multi_resolution), "--multi-resolution"
    elif config.resolution is not None:
        resolutions, flag = (int(config.resolution),), "--resolution"
    else:
        resolutions, flag = tuple(method_cls.default_resolutions(spec)), "--resolution"
    for r in resolutions:
        if r < 4 or r > 4 * spec.input_size:
            raise UserError(f"{flag} {r} is out of range for {spec.name} (4 to {4 * spec.input_size})")
    method_cls.check_resolutions(resolutions)
    return resolutions


def check_arguments(config: RunConfig, world_size: int = 1) -> RunArguments:
    """Fill the defaults a config decides alone and refuse what the arguments (and the files they
    name) decide alone, so that a refusal comes before any data is read or warned about."""
    spec = dataset_spec(config.dataset, config.classes)
    method_cls = METHODS.get(config.method)
    if not (isinstance(config.ratio, (int, float)) and math.isfinite(config.ratio) and config.ratio > 0):
        raise UserError(f"--ratio must be > 0 (synthetic images / real training images), got {config.ratio}")
    teacher = config.teacher or spec.default_teacher
    student = config.student or spec.default_student
    MODELS.get(teacher)
    MODELS.get(student)
    resolutions = generation_resolutions(config, method_cls, spec)
    if config.teacher_checkpoint and not Path(config.teacher_checkpoint).is_file():
        raise UserError(f"--teacher-checkpoint {config.teacher_checkpoint} does not exist")
    if config.label_embeddings and not Path(config.label_embeddings).is_file():
        raise UserError(f"--label-embeddings {config.label_embeddings} does not exist")
    if config.time_budget is not None and not (isinstance(config.time_budget, (int, float))
                                               and math.isfinite(config.time_budget) and config.time_budget > 0):
        raise UserError(f"--time-budget must be a positive number of seconds (synthesis + KD), got {config.time_budget}")
    parse_amp(config.amp)
    try:
        bank_gpu_budget(config.bank_gpu_gb)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if config.teacher_checkpoint and config.teacher_weights:
        raise UserError("pass either --teacher-checkpoint FILE or --teacher-weights NAME, not both")
    if config.teacher_weights:
        torchvision_weights(teacher, config.teacher_weights, RUN_ARCH_FLAG)
    hparams = resolve_hparams(method_cls.Hparams, spec.preset_names, hparam_overrides(config), method_cls.name,
                              teacher=teacher, smoke=config.smoke, protocol=config.protocol)
    protocol_reference(config, method_cls, spec)
    device = pick_device(config.device)
    if world_size > 1:
        check_data_parallel(method_cls, hparams, config, world_size)
    return RunArguments(config, spec, method_cls, hparams, teacher, student, resolutions, device, world_size)


def resolve(config: RunConfig, sources: Sources | None = None, need_data: bool = True,
            world_size: int | None = None) -> ResolvedRun:
    """Fill defaults and validate (data root included); every bad input becomes a one-line UserError.
    With need_data=False (a dry run) a dataset without a data root is sized by its standard split."""
    size = distributed.environment_world_size() if world_size is None else world_size
    return resolve_checked(check_arguments(config, size), sources, need_data)


def resolve_all(configs: Sequence[RunConfig], need_data: bool = True,
                world_size: int | None = None) -> list[ResolvedRun]:
    """`resolve` for a grid: every config's arguments are checked (each teacher checkpoint read once)
    before any data root is opened, and each root is then opened once."""
    size = distributed.environment_world_size() if world_size is None else world_size
    checked = [check_arguments(c, size) for c in configs]
    for file, arch, spec in dict.fromkeys((a.config.teacher_checkpoint, a.teacher, a.spec) for a in checked
                                          if a.config.teacher_checkpoint):
        check_checkpoint(file, spec, arch, RUN_ARCH_FLAG)
    sources: Sources = {}
    return [resolve_checked(a, sources, need_data) for a in checked]


def resolve_checked(args: RunArguments, sources: Sources | None = None, need_data: bool = True) -> ResolvedRun:
    """`resolve` after `check_arguments`: the data root opened (once per root in `sources`), the bank's
    size checked and the rounds laid out."""
    config, spec, method_cls, hparams = args.config, args.spec, args.method_cls, args.hparams
    has_root = bool(config.data_root or os.environ.get(DATA_ENV)) or not spec.needs_data_root
    source = open_source(spec, config.data_root, sources) if need_data or has_root else None
    train_size = source.train_size if source else spec.train_size
    if need_data and method_cls.sample_source == "bank":  # before laying out the rounds (a dry run reports the size)
        check_bank_fits(planned_images(config, hparams, train_size), spec.in_chans, args.resolutions, args.device)
    schedule = build_schedule(config, method_cls, spec, hparams, train_size)
    if schedule.source != method_cls.sample_source:
        raise UserError(f"{method_cls.name}: its hyper-parameters ({method_cls.Hparams.__name__}) build a "
                        f"{schedule.source} schedule, but the method samples from its {method_cls.sample_source}")
    return ResolvedRun(**{f.name: getattr(args, f.name) for f in fields(RunArguments)},
                       n_synthetic=schedule.images, source=source, schedule=schedule)


def check_data_parallel(method_cls: type[Method], hparams: MethodHparams, config: RunConfig, world_size: int) -> None:
    """Refuse, in one line, what a data-parallel run cannot do yet."""
    if config.auto_batch:
        raise UserError("--auto-batch runs in one process (a rank out of memory cannot retry alone); drop --nproc")
    if min(hparams.synth_batch, hparams.kd_batch) < world_size:
        raise UserError(f"{method_cls.name}: synth_batch {hparams.synth_batch} and kd_batch {hparams.kd_batch} must "
                        f"each be at least the {world_size} processes, so every rank has a share")
