"""The GPU-minded paths on the CPU: out-of-memory rows and --auto-batch, bf16 autocast, --compile and
its eager fallback, and a run whose bank spills to the host tier."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from dfkd_bench import execute, runner
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import DistillationRun
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.engine.compile import compile_run
from dfkd_bench.engine.memory import is_out_of_memory
from dfkd_bench.errors import UserError
from dfkd_bench.plugins import METHODS
from method_helpers import make_ctx


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def tiny_sets(tiny: dict[str, dict[str, str]], *methods: str) -> list[str]:
    return [f"{m}.{k}={v}" for m in methods for k, v in tiny[m].items()]


def out_of_memory_above(monkeypatch: pytest.MonkeyPatch, kd_batch: int) -> list[int]:
    """Make every student step on a batch larger than `kd_batch` raise CUDA's out-of-memory error;
    returns the batch sizes tried."""
    seen: list[int] = []
    original = Distiller.step

    def step(self: Distiller, groups: Any, batch_size: int) -> torch.Tensor:
        seen.append(batch_size)
        if batch_size > kd_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (injected)")
        return original(self, groups, batch_size)

    monkeypatch.setattr(Distiller, "step", step)
    return seen


def test_an_out_of_memory_run_is_recorded_and_the_next_one_runs(tmp_path: Path, digits_teacher, tiny,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    tiny["deepinversion"]["kd_batch"] = "16"  # fits; fast's 32 does not
    out_of_memory_above(monkeypatch, 16)
    runner.run(["fast", "deepinversion"], ratio=0.05, out=tmp_path, device="cpu",
               sets=tiny_sets(tiny, "fast", "deepinversion"))
    rows = rows_of(tmp_path)
    assert rows["fast"]["status"] == "oom" and rows["fast"]["student_acc"] == ""
    assert "synth_batch/kd_batch 16/32" in rows["fast"]["error"] and "out of memory" in rows["fast"]["error"]
    assert rows["deepinversion"]["status"] == "ok" and float(rows["deepinversion"]["student_acc"]) > 0
    # an oom row is not finished: a second call tries it again (and here runs out of memory again)
    runner.run(["fast"], ratio=0.05, out=tmp_path, device="cpu", sets=tiny_sets(tiny, "fast"))
    assert rows_of(tmp_path)["fast"]["status"] == "oom"


def test_auto_batch_retries_at_half_size_with_the_same_images(tmp_path: Path, digits_teacher, tiny,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    seen = out_of_memory_above(monkeypatch, 16)
    schedules = []
    original_init = DistillationRun.__init__

    def recording_init(self: DistillationRun, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        schedules.append(self.schedule)

    monkeypatch.setattr(DistillationRun, "__init__", recording_init)
    runner.run(["fast"], ratio=0.05, out=tmp_path, device="cpu", auto_batch=True, sets=tiny_sets(tiny, "fast"))
    row = rows_of(tmp_path)["fast"]
    assert row["status"] == "ok", row["error"]
    assert (row["synth_batch"], row["kd_batch"]) == ("8", "16")
    assert seen[0] == 32 and set(seen[1:]) == {16}
    full, half = schedules
    assert half.images == full.images == int(row["n_synthetic"])  # the same synthetic images ...
    assert half.kd_steps * 16 == full.kd_steps * 32               # ... and the same images seen by the student
    assert len(half.rounds) == 2 * len(full.rounds) - (len(full.rounds) * 16 - full.images) // 8


def test_auto_batch_stops_at_its_floor(tmp_path: Path, digits_teacher, tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    out_of_memory_above(monkeypatch, 1)
    runner.run(["fast"], ratio=0.02, out=tmp_path, device="cpu", auto_batch=True, sets=tiny_sets(tiny, "fast"))
    row = rows_of(tmp_path)["fast"]
    assert row["status"] == "oom"
    assert "16/32, 8/16, 4/8" in row["error"]  # halved down to the floor of 4, then recorded


def test_out_of_memory_is_recognised() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shapes cannot be multiplied"))


def test_bf16_autocast_runs_on_the_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dtypes: dict[str, set[torch.dtype]] = {"teacher": set(), "student": set()}
    original = execute.execute

    def watching(resolved: Any, teacher: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        hooks = [teacher.register_forward_hook(lambda m, i, o: dtypes["teacher"].add(o.dtype))]
        try:
            return original(resolved, teacher, *args, **kwargs)
        finally:
            for h in hooks:
                h.remove()

    monkeypatch.setattr(execute, "execute", watching)
    create = execute.MethodContext.create

    def create_watching_student(*args: Any, **kwargs: Any) -> Any:
        ctx = create(*args, **kwargs)
        ctx.student.register_forward_hook(lambda m, i, o: dtypes["student"].add(o.dtype))
        return ctx

    monkeypatch.setattr(execute.MethodContext, "create", create_watching_student)
    runner.run(["fast"], out=tmp_path, device="cpu", amp="bf16", smoke=True)  # bf16 is emulated (slow) on most CPUs
    row = rows_of(tmp_path)["fast"]
    assert row["status"] == "ok" and 0 <= float(row["student_acc"]) <= 100
    assert torch.bfloat16 in dtypes["teacher"] and torch.bfloat16 in dtypes["student"]
    default = runner.run(["fast"], device="cpu", smoke=True, dry_run=True)[0]
    assert default.run_id != rows_of(tmp_path)["fast"]["run_id"]  # bf16 on the CPU is a different run


def test_compile_runs_and_falls_back_to_eager_in_one_line(tmp_path: Path, digits_teacher, tiny,
                                                          monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def broken(self: torch.nn.Module, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("no C++ compiler found\nlong details")

    monkeypatch.setattr(torch.nn.Module, "compile", broken)
    runner.run(["fast"], ratio=0.05, out=tmp_path, device="cpu", compile=True, sets=tiny_sets(tiny, "fast"))
    assert rows_of(tmp_path)["fast"]["status"] == "ok"
    notes = [r.getMessage() for r in caplog.records if "--compile" in r.getMessage()]
    assert len(notes) == 3 and all("\n" not in n and "runs eagerly" in n for n in notes), notes


def test_compile_with_the_eager_backend_matches_eager_mode() -> None:
    """Dynamo traces the models with the method's BN hooks in place: the same images as eager mode."""
    fast = METHODS.get("fast")
    hp = resolve_hparams(fast.Hparams, "digits", {"synth_batch": "8", "g_steps": "2"}, "fast")
    eager, compiled = fast(make_ctx(), hp), fast(make_ctx(), hp)
    compiled_names = compile_run(compiled.ctx, compiled, log=print, backend="eager")
    assert compiled_names == ["teacher", "student", "generator"]
    a, b = eager.synthesize(8), compiled.synthesize(8)
    assert torch.allclose(a.images, b.images, atol=1e-5) and torch.equal(a.labels, b.labels)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)


def test_a_bad_bank_budget_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--bank-gpu-gb"):
        runner.run(["fast"], ratio=0.05, out=tmp_path, device="cpu", bank_gpu_gb=-1.0)


def test_a_ratio_whose_bank_cannot_fit_is_refused_with_the_estimate(tmp_path: Path) -> None:
    """1e6 x the 1,437 digits training images at 32 px: a 4 TiB uint8 bank, refused before any work."""
    with pytest.raises(UserError, match=r"needs about 4\d{3}\.\d GiB \(uint8\)") as refused:
        runner.run(["fast"], ratio=1e6, out=tmp_path, device="cpu")
    assert "\n" not in str(refused.value) and "--ratio" in str(refused.value)
    assert not (tmp_path / "runs.csv").exists() and not (tmp_path / "runs").exists()
