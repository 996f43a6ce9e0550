"""One resolved run executed: the method built and driven, its folder and runs.csv row written, the
out-of-memory retry (--auto-batch), and the path of the other ranks of a data-parallel run."""

from __future__ import annotations

import datetime as _dt
import json
import logging
import traceback
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import __version__, distributed
from .data.split import EvalSplit
from .engine import Diverged, DistillationRun, MethodContext
from .engine.budget import TimeBudget
from .engine.checkpoint import save_atomic
from .engine.compile import compile_run
from .engine.flops import achieved_rate
from .engine.memory import free_device_memory, is_out_of_memory
from .engine.precision import device_name, precision_label
from .engine.timing import peak_memory_mb
from .errors import UserError
from .models import create_model
from .outputs import write_curve, write_json, write_run_row, write_sample_arrays, write_samples
from .resolve import ResolvedRun, device_bank_budget
from .teachers import TeacherCard
from .tracking import RunTracker


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
                               label_embeddings_loader=_label_embedding_loader(resolved), group=distributed.current(),
                               auto_phases=resolved.method_cls.auto_bf16_phases)
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
            "amp": precision_label(c.amp, resolved.device, resolved.method_cls.auto_bf16_phases),
            "device_name": device_name(resolved.device),
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
