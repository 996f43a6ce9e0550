"""`--amp auto`'s precision policy (engine.precision) with torch's capability queries mocked both ways, what a
runs.csv row records of it (`amp`, `device_name`), the run ids it gives, and fp32 losses under bf16 autocast."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch

from dfkd_bench import runner
from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import BNStatisticsLoss, MethodContext
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.engine.method import Method
from dfkd_bench.engine.precision import (PHASES, amp_dtype_for, device_name, phase_dtypes, precision_id,
                                         precision_label)
from dfkd_bench.engine.synthesis import teacher_terms
from dfkd_bench.errors import UserError
from dfkd_bench.outputs import RUNS_COLUMNS, write_runs_csv
from dfkd_bench.plugins import METHODS
from dfkd_bench.report.pivot import build_pivot
from dfkd_bench.report.plot_results import load_results
from dfkd_bench.report.tables import read_runs_csv, summarize
from method_helpers import make_ctx

CPU_NAME = "Test CPU 9000"


def fake_cpu(monkeypatch: pytest.MonkeyPatch, **features: bool) -> None:
    """Make torch's CPU capability query report `features` (AMX-BF16, AVX512-BF16 off unless given)."""
    caps = {"cpu_name": CPU_NAME, "architecture": "x86_64", "amx_bf16": False, "avx512_bf16": False, **features}
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)


@pytest.mark.parametrize("features, expected", [
    ({"amx_bf16": True}, torch.bfloat16),
    ({"avx512_bf16": True}, torch.bfloat16),
    ({}, None),
])
def test_auto_is_bf16_on_cpus_that_report_native_bf16(monkeypatch: pytest.MonkeyPatch, features: dict[str, bool],
                                                        expected: torch.dtype | None) -> None:
    fake_cpu(monkeypatch, **features)
    cpu = torch.device("cpu")
    assert amp_dtype_for("auto", cpu) is expected
    assert amp_dtype_for("bf16", cpu) is torch.bfloat16 and amp_dtype_for("off", cpu) is None
    assert amp_dtype_for("auto", cpu, auto_phases=()) is None  # a method that keeps fp32 under auto


def test_auto_needs_onednn_to_use_the_cpus_units(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, amx_bf16=True)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert amp_dtype_for("auto", torch.device("cpu")) is None


@pytest.mark.parametrize("capability, expected", [((7, 5), None), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)])
def test_auto_on_cuda_needs_bf16_tensor_cores(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int],
                                              expected: torch.dtype | None) -> None:
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert amp_dtype_for("auto", torch.device("cuda")) is expected


@pytest.mark.parametrize("amp", ["fp16", "synth=fp16", "gen=off", "synth:off"])
def test_an_unknown_amp_is_refused_in_one_line_naming_the_choices(amp: str) -> None:
    with pytest.raises(UserError, match=r"choose from: auto, bf16, off, or per phase synth=MODE,kd=MODE") as err:
        amp_dtype_for(amp, torch.device("cpu"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("amp, features, auto_phases, expected", [
    ("synth=off,kd=bf16", {}, PHASES, {"synth": None, "kd": torch.bfloat16}),
    ("kd=off", {"amx_bf16": True}, PHASES, {"synth": torch.bfloat16, "kd": None}),  # a phase left out is auto
    ("auto", {"amx_bf16": True}, ("kd",), {"synth": None, "kd": torch.bfloat16}),  # the method keeps synth fp32
    ("bf16", {}, ("kd",), {"synth": torch.bfloat16, "kd": torch.bfloat16}),  # forced bf16 overrides the method
])
def test_each_phase_has_its_precision(monkeypatch: pytest.MonkeyPatch, amp: str, features: dict[str, bool],
                                      auto_phases: tuple[str, ...], expected: dict[str, torch.dtype | None]) -> None:
    fake_cpu(monkeypatch, **features)
    assert phase_dtypes(amp, torch.device("cpu"), auto_phases) == expected


@pytest.mark.parametrize("amp, cpu_label, cpu_id, cuda_id", [
    ("off", "fp32", None, "off"),
    ("bf16", "bf16", "bf16", None),
    ("synth=off,kd=bf16", "synth=fp32,kd=bf16", "synth=off,kd=bf16", "synth=off,kd=bf16"),
])
def test_labels_and_ids_name_the_precision_against_the_devices_reference(
        monkeypatch: pytest.MonkeyPatch, amp: str, cpu_label: str, cpu_id: str | None, cuda_id: str | None) -> None:
    fake_cpu(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert precision_label(amp, torch.device("cpu")) == cpu_label
    assert precision_id(amp, torch.device("cpu")) == cpu_id and precision_id(amp, torch.device("cuda")) == cuda_id


def test_a_context_switches_precision_per_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, amx_bf16=True)
    base = make_ctx()
    ctx = MethodContext.create(base.teacher, base.student, base.spec, 0, device="cpu", amp="auto", auto_phases=("kd",))
    assert ctx.channels_last and ctx.amp_dtype is None  # synthesis (and anything outside KD) in fp32
    with ctx.in_phase("kd"):
        assert ctx.amp_dtype is torch.bfloat16
        with ctx.autocast():
            assert ctx.student(torch.rand(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)).dtype \
                == torch.bfloat16
    assert ctx.amp_dtype is None


def test_device_name_is_the_cpus_model(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch)
    assert device_name(torch.device("cpu")) == CPU_NAME


def only_row(out: Path) -> dict[str, str]:
    with open(out / "runs.csv", newline="") as fh:
        (row,) = list(csv.DictReader(fh))
    return row


def watch_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, set[Any]]:
    """Record the student's forward output dtypes, the models' memory format and every loss term's dtype."""
    seen: dict[str, set[Any]] = {"forward": set(), "channels_last": set(), "terms": set()}
    create, record = MethodContext.create, Method.record_terms

    def create_watching(*args: Any, **kwargs: Any) -> MethodContext:
        ctx = create(*args, **kwargs)
        ctx.student.register_forward_hook(lambda m, i, o: seen["forward"].add(o.dtype))
        seen["channels_last"].add(ctx.channels_last)
        return ctx

    def record_watching(self: Method, phase: str, terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seen["terms"].update((phase, name, value.dtype) for name, value in terms.items())
        return record(self, phase, terms)

    monkeypatch.setattr(MethodContext, "create", create_watching)
    monkeypatch.setattr(Method, "record_terms", record_watching)
    return seen


def test_an_auto_run_on_an_amx_cpu_is_bf16_with_fp32_losses_and_its_own_id(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch, amx_bf16=True)
    seen = watch_run(monkeypatch)
    runner.run(["fast"], out=tmp_path, device="cpu", amp="auto", smoke=True)  # bf16 is emulated (slow) on most CPUs
    row = only_row(tmp_path)
    assert row["status"] == "ok" and row["amp"] == "bf16" and row["device_name"] == CPU_NAME
    assert seen["forward"] == {torch.bfloat16} and seen["channels_last"] == {True}
    phases = {phase for phase, _, _ in seen["terms"]}
    assert phases == {"synth", "kd"} and {dtype for _, _, dtype in seen["terms"]} == {torch.float32}, seen["terms"]
    forced = runner.run(["fast"], device="cpu", amp="bf16", smoke=True, dry_run=True)[0]
    fp32 = runner.run(["fast"], device="cpu", amp="off", smoke=True, dry_run=True)[0]
    assert row["run_id"] == forced.run_id != fp32.run_id
    assert forced.identity()["amp"] == "bf16"


def test_an_auto_run_elsewhere_is_fp32_under_the_ids_of_before(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch)
    seen = watch_run(monkeypatch)
    runner.run(["fast"], out=tmp_path, device="cpu", amp="auto", smoke=True)
    row = only_row(tmp_path)
    assert row["status"] == "ok" and row["amp"] == "fp32" and row["device_name"] == CPU_NAME
    assert seen["forward"] == {torch.float32} and seen["channels_last"] == {False}
    fp32 = runner.run(["fast"], device="cpu", amp="off", smoke=True, dry_run=True)[0]
    assert row["run_id"] == fp32.run_id and "amp" not in fp32.identity()  # a CPU fp32 id names no precision


def test_bn_statistics_ce_and_kd_losses_are_fp32_under_bf16_autocast() -> None:
    base = make_ctx()
    ctx = MethodContext.create(base.teacher, base.student, base.spec, 0, device="cpu", amp="bf16")
    assert ctx.amp_dtype is torch.bfloat16
    x, labels = torch.rand(8, 1, 32, 32), torch.arange(8) % 10
    bn_loss = BNStatisticsLoss(ctx.teacher)
    logits, bn, ce = teacher_terms(ctx, bn_loss, ctx.normalize(x), labels)
    assert (logits.dtype, bn.dtype, ce.dtype) == (torch.float32,) * 3
    fast = METHODS.get("fast")
    method = fast(ctx, resolve_hparams(fast.Hparams, "digits", {}, "fast"))
    distiller = Distiller(ctx, method, torch.optim.SGD(ctx.student.parameters(), lr=0.1), None)
    loss = distiller.step([(x, labels)], 8)
    assert loss.dtype == torch.float32 and method.loss_terms["kd/kd"].dtype == torch.float32


def write_rows(out: Path, accuracies: dict[tuple[str, str], list[float]]) -> Path:
    """runs.csv of muse runs, one per accuracy, keyed by (amp, id hash); amp "" writes a row of before the column."""
    rows = [{"run_id": f"muse-digits-r0.1-32px-s{seed}-{variant}", "method": "muse", "dataset": "digits",
             "teacher": "t", "student": "s", "ratio": 0.1, "resolution": 32, "seed": seed, "status": "ok",
             "student_acc": acc, "teacher_acc": 99.0, "synth_s": 1, "kd_s": 2, "eval_s": 0, "total_s": 3,
             "n_synthetic": 10, "device": "cpu", "amp": amp, "budget": "images"}
            for (amp, variant), values in accuracies.items() for seed, acc in enumerate(values)]
    write_runs_csv(out, rows, RUNS_COLUMNS)
    return out


def test_summary_shows_precision_only_when_runs_mix_them(tmp_path: Path) -> None:
    mixed = summarize(read_runs_csv(write_rows(tmp_path / "mixed", {("fp32", "aaaa"): [90, 92],
                                                                   ("bf16", "bbbb"): [80, 82]})))
    assert dict(zip(mixed["amp"], mixed["student_acc"])) == {"fp32": 91.0, "bf16": 81.0}
    legacy = summarize(read_runs_csv(write_rows(tmp_path / "legacy", {("", "aaaa"): [90], ("fp32", "aaaa"): [92]})))
    assert "amp" not in legacy.columns and list(legacy["student_acc"]) == [91.0]  # a CPU row of before is fp32


def test_pivot_rows_name_the_precision_when_runs_mix_them(tmp_path: Path) -> None:
    pivot = build_pivot(write_rows(tmp_path, {("fp32", "aaaa"): [90, 92], ("bf16", "bbbb"): [80, 82]}))
    assert pivot.rows == ["method", "amp"]
    assert {label: row[0].mean for label, row in zip(pivot.row_labels, pivot.cells)} == {
        ("muse", "bf16"): 81.0, ("muse", "fp32"): 91.0}
    with pytest.raises(UserError, match=r"mixes precisions \(bf16, fp32\)"):
        load_results(tmp_path)


def test_a_per_phase_run_computes_each_phase_in_its_precision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_cpu(monkeypatch)
    dtypes: dict[bool, set[torch.dtype]] = {True: set(), False: set()}  # student in train mode (KD) / eval mode
    create = MethodContext.create

    def create_watching(*args: Any, **kwargs: Any) -> MethodContext:
        ctx = create(*args, **kwargs)
        ctx.student.register_forward_hook(lambda m, i, o: dtypes[m.training].add(o.dtype))
        return ctx

    monkeypatch.setattr(MethodContext, "create", create_watching)
    runner.run(["fast"], out=tmp_path, device="cpu", amp="synth=off,kd=bf16", smoke=True)
    row = only_row(tmp_path)
    assert row["status"] == "ok" and row["amp"] == "synth=fp32,kd=bf16"
    assert dtypes == {True: {torch.bfloat16}, False: {torch.float32}}  # KD steps bf16; synthesis and eval fp32
    planned = runner.run(["fast"], device="cpu", amp="synth=off,kd=bf16", smoke=True, dry_run=True)[0]
    assert row["run_id"] == planned.run_id and planned.identity()["amp"] == "synth=off,kd=bf16"
