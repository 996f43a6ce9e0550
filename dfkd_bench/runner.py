"""One run, and many runs (methods x ratios x resolutions x pairs x seeds), skipping finished ones."""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import logging
import math
import os
import traceback
import warnings
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import __version__, distributed
from .config import MethodHparams, RunConfig, hparams_dict, parse_set_options, resolve_hparams, stable_hash
from .data import DATA_ENV, DataSource, DatasetSpec, get_dataset
from .schedule import PROTOCOLS, ReferenceSchedule, Schedule
from .data.imagenet_classes import imagenet_descriptions, read_wnid_file
from .engine import Diverged, DistillationRun, Method, MethodContext, Normalize
from .engine.bank import bank_gpu_budget
from .engine.method import AMP_MODES, amp_dtype_for
from .engine.compile import compile_run
from .engine.flops import achieved_rate
from .engine.memory import free_device_memory, is_out_of_memory
from .engine.budget import TimeBudget
from .engine.checkpoint import save_atomic
from .data.split import EvalSplit
from .engine.evaluate import accuracy
from .engine.timing import peak_memory_mb
from .errors import UserError
from .models import MODELS, create_model
from .outputs import FINISHED, read_runs, write_curve, write_json, write_run_row, write_sample_arrays, write_samples
from .plugins import METHODS
from .teachers import RUN_ARCH_FLAG, SMOKE_TEST_IMAGES, TeacherCard, check_checkpoint, get_teacher, torchvision_weights
from .tracking import RunTracker, check_trackers

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

    def identity(self) -> dict[str, Any]:
        """What defines the run (hashed into run_id)."""
        c = self.config
        return {"method": self.method_cls.name, "dataset": self.spec.name, "teacher": self.teacher,
                "teacher_checkpoint": c.teacher_checkpoint, "student": self.student, "ratio": c.ratio,
                "resolutions": list(self.resolutions), "seed": c.seed, "device": self.device.type,
                "label_embeddings": c.label_embeddings, "hparams": hparams_dict(self.hparams),
                **({"teacher_weights": c.teacher_weights} if c.teacher_weights else {}),
                **({"smoke": True} if c.smoke else {}),
                **({"protocol": c.protocol} if c.protocol != "equal" else {}),
                **self._precision(),
                **({"time_budget": c.time_budget} if c.time_budget else {}),
                **({"world_size": self.world_size} if self.world_size > 1 else {})}

    def _precision(self) -> dict[str, str]:
        """{"amp": "bf16"|"off"} when the forwards' precision differs from the device's default (CUDA:
        bf16 autocast; CPU: fp32), so default runs keep their ids."""
        chosen = amp_dtype_for(self.config.amp, self.device) is not None
        default = amp_dtype_for("auto", self.device) is not None
        return {} if chosen == default else {"amp": "bf16" if chosen else "off"}

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
                        f"GiB (half the RAM); lower --ratio or the generation resolution (--sweep-resolutions)")


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
    if config.protocol == "paper" and not config.smoke:
        return hparams.paper_schedule(n_total, reference)
    return hparams.equal_schedule(n_total, reference)


def generation_resolutions(config: RunConfig, method_cls: type[Method], spec: DatasetSpec) -> tuple[int, ...]:
    """The run's generation resolution(s), each in range and one the method can make; a refusal names
    the option that gave it (--multi-resolution or --sweep-resolutions)."""
    if config.resolutions:
        resolutions, flag = tuple(int(r) for r in config.resolutions), "--multi-resolution"
    elif config.resolution is not None:
        resolutions, flag = (int(config.resolution),), "--sweep-resolutions"
    else:
        resolutions, flag = tuple(method_cls.default_resolutions(spec)), "--sweep-resolutions"
    for r in resolutions:
        if r < 4 or r > 4 * spec.input_size:
            raise UserError(f"{flag} {r} is out of range for {spec.name} (4 to {4 * spec.input_size})")
    method_cls.check_resolutions(resolutions)
    return resolutions


def check_arguments(config: RunConfig) -> RunArguments:
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
    if config.amp not in AMP_MODES:
        raise UserError(f"unknown --amp {config.amp!r}; choose from: {', '.join(AMP_MODES)}")
    try:
        bank_gpu_budget(config.bank_gpu_gb)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    if config.teacher_checkpoint and config.teacher_weights:
        raise UserError("pass either --teacher-checkpoint FILE or --teacher-weights NAME, not both")
    if config.teacher_weights:
        torchvision_weights(teacher, config.teacher_weights, RUN_ARCH_FLAG)
    hparams = resolve_hparams(method_cls.Hparams, spec.preset_names, config.overrides, method_cls.name,
                              teacher=teacher, smoke=config.smoke, protocol=config.protocol)
    protocol_reference(config, method_cls, spec)
    device = pick_device(config.device)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1:
        check_data_parallel(method_cls, hparams, config, world_size)
    return RunArguments(config, spec, method_cls, hparams, teacher, student, resolutions, device, world_size)


def resolve(config: RunConfig, sources: Sources | None = None, need_data: bool = True) -> ResolvedRun:
    """Fill defaults and validate (data root included); every bad input becomes a one-line UserError.
    With need_data=False (a dry run) a dataset without a data root is sized by its standard split."""
    return resolve_checked(check_arguments(config), sources, need_data)


def resolve_all(configs: Sequence[RunConfig], need_data: bool = True) -> list[ResolvedRun]:
    """`resolve` for a grid: every config's arguments are checked (each teacher checkpoint read once)
    before any data root is opened, and each root is then opened once."""
    checked = [check_arguments(c) for c in configs]
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


RoundHook = Callable[[ResolvedRun, int, int, Any], None]


def _label_embedding_loader(resolved: ResolvedRun) -> Callable[[], torch.Tensor]:
    """The user's file, else the shipped ImageNet embeddings picked by wnid (ImageNet, its subsets,
    Tiny-ImageNet), else the dataset's shipped file."""
    def load() -> torch.Tensor:
        from .label_embeddings import embeddings_for_wnids, load_label_embeddings

        wnids = resolved.source.wnids
        if wnids and not resolved.config.label_embeddings:
            return embeddings_for_wnids(wnids).vectors.float()
        emb = load_label_embeddings(resolved.spec.name, resolved.config.label_embeddings,
                                    num_classes=resolved.spec.num_classes)
        return emb.vectors.float()
    return load


def execute(resolved: ResolvedRun, teacher: torch.nn.Module, test_split: EvalSplit, run_dir: Path,
            on_round: RoundHook | None = None, tracker: RunTracker | None = None) -> tuple[Any, MethodContext]:
    """Build student, method and context with the run's seed, resume if possible, and run all rounds
    (mirrored round by round into `tracker` when one is given)."""
    cfg, spec, device = resolved.config, resolved.spec, resolved.device
    torch.manual_seed(cfg.seed)
    student = create_model(resolved.student, spec.num_classes, spec.in_chans)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    ctx = MethodContext.create(teacher, student, spec, cfg.seed, resolved.resolutions, device, cfg.amp,
                               label_embeddings_loader=_label_embedding_loader(resolved), group=distributed.current())
    method = resolved.method_cls(ctx, resolved.run_hparams)
    if cfg.compile:
        compile_run(ctx, method, log=logging.getLogger("dfkd_bench").warning)
    def hook(r: int, n: int, state: Any) -> None:
        if on_round:
            on_round(resolved, r, n, state)
        if tracker:
            tracker.round(r, state, run.bank, method.loss_terms)

    budget = TimeBudget(cfg.time_budget) if cfg.time_budget else None
    run = DistillationRun(method, ctx, test_split, resolved.schedule,
                          checkpoint_path=run_dir / "checkpoint.pt", on_round=hook, time_budget=budget,
                          bank_budget_bytes=device_bank_budget(cfg, device))
    try:
        run.try_resume()
        if tracker:
            tracker.points_logged = len(run.state.curve)  # a resumed run logged those before
        return run.run(), ctx
    finally:
        method.close()


def _base_row(resolved: ResolvedRun, card: TeacherCard | None, started: str) -> dict[str, Any]:
    c = resolved.config
    return {"run_id": resolved.run_id, "method": resolved.method_cls.name, "dataset": resolved.spec.name,
            "teacher": resolved.teacher, "student": resolved.student, "ratio": c.ratio,
            "resolution": resolved.resolution_label, "seed": c.seed, "n_synthetic": resolved.n_synthetic,
            "teacher_acc": f"{card.test_acc:.2f}" if card and card.test_acc is not None else "", "device": _device_name(resolved.device),
            "started_at": started, "version": __version__, "error": "", "smoke": 1 if c.smoke else "",
            "protocol": c.protocol, "time_budget": f"{c.time_budget:g}" if c.time_budget else "",
            "budget": resolved.schedule.budget, "world_size": resolved.world_size,
            "num_classes": resolved.spec.num_classes,
            "paper_kd_steps": getattr(resolved.run_hparams, "paper_steps", "") or "",
            "protocol_notes": resolved.schedule.protocol_notes()}


class OutOfMemory(RuntimeError):
    """A run ran out of memory at every batch size it was allowed to try."""


HALVINGS_FILE = "batch.json"  # --auto-batch: the halvings a run's checkpoint was made at


def read_halvings(run_dir: Path) -> int:
    """How many times an interrupted run had halved its batch sizes (0 without a checkpoint)."""
    path = run_dir / HALVINGS_FILE
    if not (run_dir / "checkpoint.pt").exists() or not path.exists():
        return 0
    return int(json.loads(path.read_text()).get("halvings", 0))


def work_columns(tflop: dict[str, float], seconds: dict[str, float]) -> dict[str, str]:
    """synth_tflop/kd_tflop (forward+backward TFLOP spent) and the TFLOP/s achieved in each phase."""
    columns = {}
    for phase in ("synth", "kd"):
        if phase not in tflop:  # not counted (synthesis under a time budget)
            columns[f"{phase}_tflop"] = columns[f"{phase}_tflops"] = ""
            continue
        columns[f"{phase}_tflop"] = f"{tflop[phase]:.6g}"
        columns[f"{phase}_tflops"] = f"{achieved_rate(tflop[phase], seconds.get(phase, 0.0)):.4g}"
    return columns


def budget_columns(outcome: Any) -> dict[str, Any]:
    """What a run made of its budget: student steps, rounds and their size, and for a time-budgeted
    run the tolerance and (over budget at its smallest unit) what that unit took."""
    return {"kd_steps": outcome.kd_steps, "rounds": outcome.rounds, "round_images": outcome.round_images,
            "tolerance_s": f"{outcome.tolerance_s:.2f}" if outcome.tolerance_s is not None else "",
            "unit_s": f"{outcome.unit_s:.2f}" if outcome.unit_s is not None else ""}


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"


def run_one(resolved: ResolvedRun, out_dir: Path, teacher: torch.nn.Module, card: TeacherCard, test_split: EvalSplit,
            on_round: RoundHook | None = None, trackers: Sequence[str] = ()) -> dict[str, Any]:
    """Run (or resume) one resolved run, write its folder and its runs.csv row; returns the row.
    `trackers` (tensorboard, wandb) mirror it live under its run_id.

    A diverged run is recorded as `diverged`, any other exception as `failed`; KeyboardInterrupt
    propagates and leaves the checkpoint for the next call to resume from.

    In a process group only rank 0 writes; the other ranks run their share (`run_as_worker`).
    """
    run_dir = out_dir / "runs" / resolved.run_id
    if not distributed.current().is_main:
        return run_as_worker(resolved, teacher, test_split, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json(run_dir / "config.json", {**resolved.identity(), "run_id": resolved.run_id,
                                         "n_synthetic": resolved.n_synthetic, "teacher_card": asdict(card),
                                         "version": __version__})
    row = _base_row(resolved, card, started)
    log = logging.getLogger(f"dfkd_bench.run.{resolved.run_id}")
    handler = logging.FileHandler(run_dir / "log.txt")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)

    def logged(res: ResolvedRun, r: int, n: int, state: Any) -> None:
        last = state.curve[-1] if state.curve else None
        rounds = (state.schedule or res.schedule).rounds  # a time budget may have re-sized them
        trained = rounds[r - 1].kd_steps > 0  # a warm-up round has no student loss to show
        log.info("round %d/%d images=%s loss=%s acc=%s seconds=%s", r, n, last.images if last else "-",
                 f"{state.last_loss:.4f}" if trained else "-", f"{last.student_acc:.2f}" if last else "-",
                 {k: round(v, 2) for k, v in state.seconds.items()})
        if on_round:
            on_round(res, r, n, state)

    tracker = RunTracker(trackers, out_dir, resolved.run_id, {**resolved.identity(), "run_id": resolved.run_id}) \
        if trackers else None
    try:
        outcome, ctx = execute_fitting(resolved, teacher, test_split, run_dir, row, logged, tracker, log)
    except OutOfMemory as exc:
        row.update(status="oom", error=str(exc)[:300], student_acc="")
        log.error("oom: %s", exc)
    except Diverged as exc:
        row.update(status="diverged", error=str(exc), student_acc="nan")
        log.info("diverged: %s", exc)
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # finished: never resumed
    except (KeyboardInterrupt, UserError):
        raise
    except Exception as exc:  # recorded so a sweep goes on; the traceback goes to the run's log
        row.update(status="failed", error=f"{type(exc).__name__}: {exc}"[:300], student_acc="")
        log.error("failed:\n%s", traceback.format_exc())
    else:
        sec = outcome.seconds
        row.update(status="over_budget" if outcome.over_budget else "ok",
                   student_acc="" if outcome.over_budget else f"{outcome.student_acc:.2f}",
                   n_synthetic=outcome.n_synthetic, **budget_columns(outcome),
                   synth_s=f"{sec.get('synth', 0):.2f}", kd_s=f"{sec.get('kd', 0):.2f}",
                   eval_s=f"{sec.get('eval', 0):.2f}", total_s=f"{sum(sec.values()):.2f}",
                   peak_mem_mb=f"{peak_memory_mb(resolved.device):.0f}",
                   bank_tier=outcome.bank.tier if outcome.bank is not None and len(outcome.bank) else "",
                   **work_columns(outcome.tflop, sec))
        write_curve(run_dir / "curve.csv", outcome.curve)
        bank = outcome.bank
        if bank is not None and len(bank):
            shown = bank.resolutions[-1]  # the latest 64 images: the generator at its most trained
            images = bank.images(shown)[-64:]
            write_samples(run_dir / "samples.png", images)
            write_sample_arrays(run_dir / "samples.npz", images, bank.labels(shown)[-64:], resolved.spec.class_names)
        save_atomic({"arch": resolved.student, "num_classes": resolved.spec.num_classes,
                     "state_dict": ctx.student.state_dict()}, run_dir / "student.pt")
        (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        if outcome.over_budget:
            log.info("over budget: %.2f s of synthesis + KD against %s s (+%s s tolerance)%s",
                     sec.get("synth", 0) + sec.get("kd", 0), row["time_budget"], row["tolerance_s"],
                     f"; its smallest unit took {row['unit_s']} s" if row["unit_s"] else "")
        else:
            log.info("done: student %.2f%% seconds %s", outcome.student_acc, sec)
        if tracker:
            tracker.finish(outcome.curve, bank, outcome.curve[-1].round, row)
    finally:
        if tracker:
            tracker.close()
        log.removeHandler(handler)
        handler.close()
    write_run_row(out_dir, row)
    return row


def execute_fitting(resolved: ResolvedRun, teacher: torch.nn.Module, test_split: EvalSplit, run_dir: Path,
                    row: dict[str, Any], on_round: RoundHook, tracker: RunTracker | None,
                    log: logging.Logger) -> tuple[Any, MethodContext]:
    """`execute`, restarted at half the batch sizes after an out-of-memory error under --auto-batch (down
    to the floor), resuming at the sizes an interrupted run had reached; raises OutOfMemory when no size
    is left to try. `row` gets the sizes in use."""
    halvings = read_halvings(run_dir)
    if halvings:
        resolved = resolved.with_halvings(halvings)
    tried: list[str] = []
    while True:
        hp = resolved.run_hparams
        row.update(synth_batch=hp.synth_batch, kd_batch=hp.kd_batch)
        tried.append(f"{hp.synth_batch}/{hp.kd_batch}")
        try:
            return execute(resolved, teacher, test_split, run_dir, on_round, tracker)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            free_device_memory(resolved.device)
            if not (resolved.config.auto_batch and resolved.can_halve()):
                raise OutOfMemory(f"out of memory at synth_batch/kd_batch {', '.join(tried)}: "
                                  f"{str(exc).splitlines()[0][:120]}") from exc
            log.info("out of memory at synth_batch/kd_batch %s; --auto-batch retries at half", tried[-1])
            resolved = resolved.with_halvings(resolved.halvings + 1)
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)  # the rounds change with the batch sizes
            write_json(run_dir / HALVINGS_FILE, {"halvings": resolved.halvings})


def run_as_worker(resolved: ResolvedRun, teacher: torch.nn.Module, test_split: EvalSplit,
                  run_dir: Path) -> dict[str, Any]:
    """A rank other than 0: the same run's share of the work (resuming from rank 0's checkpoint), writing
    nothing; rank 0 records the row, so a divergence or a rank mismatch (each decided alike on every
    rank) ends quietly here."""
    try:
        execute(resolved, teacher, test_split, run_dir)
    except (Diverged, distributed.RankMismatch):
        pass
    return {"run_id": resolved.run_id, "method": resolved.method_cls.name}


def expand(methods: Sequence[str], base: RunConfig, ratios: Sequence[float] = (),
           resolutions: Sequence[int | None] = (None,), seeds: Sequence[int] = (),
           pairs: Sequence[tuple[str | None, str | None]] = ((None, None),),
           overrides: dict[str, dict[str, str]] | None = None,
           time_budgets: Sequence[float | None] = ()) -> list[RunConfig]:
    """The grid of run configurations (methods x pairs x ratios x resolutions x time budgets x seeds)."""
    configs = []
    for method, (teacher, student), ratio, res, budget, seed in itertools.product(
            methods, pairs, ratios or [base.ratio], resolutions, time_budgets or [base.time_budget],
            seeds or [base.seed]):
        configs.append(replace(base, method=method, ratio=ratio, seed=seed, time_budget=budget,
                               resolution=res if res is not None else base.resolution,
                               teacher=teacher or base.teacher, student=student or base.student,
                               overrides=dict((overrides or {}).get(method, base.overrides))))
    return configs


def run_many(configs: Sequence[RunConfig], out_dir: str | Path = "results", force: bool = False,
             on_round: RoundHook | None = None, on_start: Callable[[ResolvedRun], None] | None = None,
             on_done: Callable[[ResolvedRun, dict[str, Any], bool], None] | None = None,
             log: Callable[[str], None] | None = None, trackers: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Validate every config first, then run each (finished runs are read back, not redone); `trackers`
    (tensorboard, wandb) mirror each run live."""
    out_dir = Path(out_dir)
    trackers = check_trackers(trackers)
    resolved = resolve_all(configs)
    group = distributed.init_from_env(resolved[0].device.type) if resolved else distributed.SINGLE
    finished = read_runs(out_dir)
    rows: list[dict[str, Any]] = []
    teachers: dict[tuple, tuple[torch.nn.Module, TeacherCard]] = {}
    splits: dict[tuple, EvalSplit] = {}
    for res in resolved:
        prior = finished.get(res.run_id)
        if prior and prior.get("status") in FINISHED and not force:
            rows.append(prior)
            if on_done:
                on_done(res, prior, True)
            continue
        if force:
            (out_dir / "runs" / res.run_id / "checkpoint.pt").unlink(missing_ok=True)
        c = res.config
        split_key = (res.spec.name, c.data_root, c.smoke)
        if split_key not in splits:
            if log:
                log(f"reading the {res.spec.name} test split (cached as uint8 after the first time)")
            with group.main_first():  # rank 0 fills the uint8 cache, the others then read it
                splits[split_key] = res.source.test_split(limit=SMOKE_TEST_IMAGES if c.smoke else None)
        teacher_key = (res.spec.name, c.data_root, res.teacher, c.teacher_checkpoint, c.teacher_weights,
                       res.device.type, c.smoke)
        if teacher_key not in teachers:
            with group.main_first():  # rank 0 trains or downloads the teacher into the cache once
                teachers[teacher_key] = get_teacher(res.spec, res.teacher, res.source, res.device,
                                                    checkpoint=c.teacher_checkpoint, weights=c.teacher_weights,
                                                    smoke=c.smoke, log=log)
        teacher, card = teachers[teacher_key]
        if card.test_acc is None:
            card = replace(card, test_acc=accuracy(teacher, splits[split_key], Normalize(res.spec.mean, res.spec.std)
                                                   .to(res.device)), test_images=len(splits[split_key]))
            teachers[teacher_key] = (teacher, card)
        if on_start:
            on_start(res)
        row = run_one(res, out_dir, teacher, card, splits[split_key], on_round, trackers)
        rows.append(row)
        if on_done:
            on_done(res, row, False)
    return rows


def run(methods: Sequence[str] | str, dataset: str = "digits", ratio: float | Sequence[float] = 0.1,
        seed: int | Sequence[int] = 0, resolution: int | Sequence[int] | None = None,
        resolutions: Sequence[int] | None = None, teacher: str | None = None, student: str | None = None,
        pairs: Sequence[tuple[str, str]] = (), sets: Sequence[str] = (), out: str | Path = "results",
        device: str = "auto", data_root: str | None = None, teacher_checkpoint: str | None = None,
        teacher_weights: str | None = None, label_embeddings: str | None = None, classes: str | None = None,
        smoke: bool = False, protocol: str = "equal", amp: str = "auto", compile: bool = False,
        bank_gpu_gb: float | None = None, auto_batch: bool = False, time_budget: float | Sequence[float] | None = None,
        dry_run: bool = False, force: bool = False, trackers: Sequence[str] = (), **callbacks: Any) -> list[Any]:
    """The Python form of `dfkd-bench run`: every method on the same teacher and budget; returns runs.csv rows.

    Lists sweep (ratios, seeds, resolutions, pairs, time budgets); `sets` are "METHOD.PARAM=VALUE" strings; `callbacks`
    are passed to `run_many` (on_round, on_start, on_done, log); `trackers` names live loggers
    (tensorboard, wandb). With `dry_run` nothing runs: the
    resolved runs come back (each with its `schedule`), no teacher, data or device work needed.
    """
    names = method_names(methods)
    check_out_dir(out)
    base = RunConfig(method=names[0], dataset=dataset, teacher=teacher, student=student,
                     resolutions=tuple(resolutions) if resolutions else None, device=device, data_root=data_root,
                     teacher_checkpoint=teacher_checkpoint, teacher_weights=teacher_weights,
                     label_embeddings=label_embeddings, classes=classes, smoke=smoke, protocol=protocol, amp=amp,
                     compile=compile, bank_gpu_gb=bank_gpu_gb, auto_batch=auto_batch)
    configs = expand(names, base, ratios=_as_list(ratio), resolutions=_as_list(resolution) or [None],
                     seeds=_as_list(seed), pairs=list(pairs) or [(None, None)],
                     overrides=parse_set_options(list(sets), names), time_budgets=_as_list(time_budget))
    if dry_run:
        return resolve_all(configs, need_data=False)
    return run_many(configs, out, force=force, trackers=trackers, **callbacks)


def method_names(methods: Sequence[str] | str) -> list[str]:
    """The methods of a run list, each known; an empty or repeated name is dropped with one warning."""
    given = [m.strip().lower() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    names = list(dict.fromkeys(m for m in given if m))
    if not names:
        raise UserError(f"no methods given; choose from: {', '.join(METHODS.names())}")
    for name in names:
        METHODS.get(name)
    if len(names) != len(given):
        repeated = sorted({m for m in given if m and given.count(m) > 1})
        what = [f"repeated {', '.join(repeated)}" if repeated else "", "empty names" if "" in given else ""]
        warnings.warn(f"--methods: dropped {' and '.join(w for w in what if w)}; running {','.join(names)}")
    return names


def check_out_dir(out: str | Path) -> None:
    """Refuse an output folder that cannot be one (an existing file, or under one) before any work."""
    path = Path(out)
    for part in (path, *path.parents):
        if part.exists() and not part.is_dir():
            raise UserError(f"--out {out}: {part} is a file, not a folder; choose a folder for the results")


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass
class PlannedRun:
    """A run of a grid as `sweep --dry-run` shows it: its id, status, images and estimated seconds."""

    resolved: ResolvedRun
    status: str                # done, partial (a checkpoint to resume) or to do
    estimate_s: float | None   # from finished runs of the same method and dataset, when there are any


def plan(configs: Sequence[RunConfig], out_dir: str | Path = "results") -> list[PlannedRun]:
    """What a grid would do, without running anything: each run's status in `out_dir` and, for runs
    still to do, seconds estimated as images x the seconds per image of finished runs of the same
    method and dataset (at most its time budget)."""
    out_dir = Path(out_dir)
    finished = read_runs(out_dir)
    per_image: dict[tuple[str, str], tuple[float, int]] = {}
    for row in finished.values():
        try:
            seconds, images = float(row.get("total_s") or "nan"), int(float(row.get("n_synthetic") or 0))
        except ValueError:
            continue
        if row.get("status") == "ok" and math.isfinite(seconds) and images > 0:
            total, count = per_image.get((row["method"], row["dataset"]), (0.0, 0))
            per_image[(row["method"], row["dataset"])] = (total + seconds, count + images)
    planned = []
    for res in resolve_all(configs, need_data=False):
        prior = finished.get(res.run_id)
        if prior and prior.get("status") in FINISHED:
            status = "done"
        elif (out_dir / "runs" / res.run_id / "checkpoint.pt").exists():
            status = "partial"
        else:
            status = "to do"
        rate = per_image.get((res.method_cls.name, res.spec.name))
        estimate = rate[0] / rate[1] * res.n_synthetic if rate and status != "done" else None
        budget = res.config.time_budget
        if budget and status != "done":  # a budgeted run stops at its budget (within about a round)
            estimate = min(estimate, budget) if estimate is not None else float(budget)
        planned.append(PlannedRun(res, status, estimate))
    return planned

