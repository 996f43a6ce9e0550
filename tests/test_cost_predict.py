"""Predictions from counted work: the calibrated model's arithmetic (the FLOP counter's overhead where a
real run keeps it), a time budget's cap, the labelled assumption without a calibration, named GPUs'
published peaks, and the cost a `run --dry-run --format json` plan carries."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfkd_bench.cost.count import PhaseCount, RunCount, count_run
from dfkd_bench.cost.peaks import PEAKS, cpu_peak, gpu_peak
from dfkd_bench.cost.predict import Basis, basis_for, cost_plan, device_hours, predict, predict_runs, summary_line
from dfkd_bench.cost.rates import Calibration, PhaseRate, save
from dfkd_bench.cost.work import Work
from dfkd_bench.engine.precision import device_name
from dfkd_bench.errors import UserError
from dfkd_bench.options import RunConfig
from dfkd_bench.resolve import resolve
from cli_helpers import ok

SMALL = {"synth_batch": "16", "g_steps": "2", "kd_steps": "2", "kd_batch": "16"}


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def small_run(method: str = "nayer", **config: object):
    """A small digits run (fp32 unless `amp` is given), resolved without data."""
    options = {"amp": "off", **config}
    return resolve(RunConfig(method=method, dataset="digits", ratio=0.02, device="cpu",
                             overrides={} if method != "nayer" else dict(SMALL), **options), need_data=False)


def calibration(counter: float = 1e-4) -> Calibration:
    return Calibration(device_name=device_name(torch.device("cpu")), device_type="cpu", precision="fp32", threads=1,
                       torch_version=torch.__version__, created="2026-01-01T00:00:00+00:00",
                       phases={"synth": PhaseRate(1e-5, 1e10, 1e9), "kd": PhaseRate(2e-5, 2e10, 2e9)},
                       counter_seconds_per_op=counter)


def test_prediction_is_the_model_of_the_work_plus_the_counter_overhead_kept() -> None:
    once, twice, step = Work(10**10, 1000, 10**8), Work(2 * 10**10, 3000, 10**9), Work(10**9, 100, 10**7)
    synth = PhaseCount({(16, True, True, 32): (once, 1), (16, False, False, 32): (twice, 3)})
    kd = PhaseCount({(16, 1, 32, 32): (step, 50)})
    basis = Basis("cpu", "fp32", calibration=calibration())
    got = predict(small_run(), basis, RunCount("r", synth, kd))
    synth_work, kd_work = once + twice.times(3), step.times(50)
    # a piece done once keeps the counter's overhead, one done three times gives it back; KD: its first step
    assert got.synth_s == pytest.approx(synth_work.ops * 1e-5 + synth_work.flops / 1e10 + synth_work.bytes / 1e9
                                        + once.ops * 1e-4)
    assert got.kd_s == pytest.approx(kd_work.ops * 2e-5 + kd_work.flops / 2e10 + kd_work.bytes / 2e9 + step.ops * 1e-4)
    assert (got.synth_tflop, got.kd_tflop) == (synth_work.flops / 1e12, kd_work.flops / 1e12)
    assert got.total_s == pytest.approx(got.synth_s + got.kd_s)
    assert device_hours([got, got]) == pytest.approx(2 * got.total_s / 3600)


def test_a_time_budget_caps_the_prediction() -> None:
    res = small_run(time_budget=0.5)
    got = predict(res, Basis("cpu", "fp32", calibration=calibration()))
    assert got.total_s == pytest.approx(0.5) and got.budget_s == 0.5
    assert "capped by its 0.5 s budget" in got.line()


def test_without_a_calibration_the_prediction_is_a_labelled_share_of_the_peak(own_cache: Path) -> None:
    res = small_run()
    cost = cost_plan(res)
    flops = (count_run(res).synth.total.flops + count_run(res).kd.total.flops)
    peak = cpu_peak().tflops("fp32") * 1e12
    assert cost["assumption"] is True and cost["utilisation"] == 0.25
    assert cost["basis"].startswith("assumed: 25% of the") and "estimate" in cost["basis"]
    assert cost["total_s"] == pytest.approx(flops / (0.25 * peak), rel=1e-3)
    low, high = cost["total_s_range"]
    assert low < cost["total_s"] < high


def test_a_stored_calibration_is_used_and_named(own_cache: Path) -> None:
    save(calibration())
    (prediction,) = predict_runs([small_run()])
    assert not prediction.basis.assumption and prediction.basis.label().startswith("calibrated on")
    assert "calibrated on" in summary_line([prediction]) and "device-hours" in summary_line([prediction])
    # a share asked for explicitly sets the calibration aside
    assert basis_for(small_run(), utilisation=0.5).assumption


def test_named_gpus_use_their_published_peak() -> None:
    res = small_run(amp="auto")
    (got,) = predict_runs([res], device="H100")
    counted = count_run(res)
    assert got.basis.precision == "bf16" and got.basis.peak == PEAKS["H100"]
    assert got.total_s == pytest.approx((counted.synth.total.flops + counted.kd.total.flops) / (0.25 * 989e12))
    assert predict_runs([small_run()], device="A100", utilisation=0.1)[0].basis.precision == "fp32"  # --amp off
    with pytest.raises(UserError, match="choose from: A100, H100"):
        predict_runs([res], device="Z9000")


@pytest.mark.parametrize("name,entry", [("NVIDIA H100 80GB HBM3", "H100"), ("NVIDIA H100 PCIe", "H100 PCIe"),
                                        ("NVIDIA A100-SXM4-40GB", "A100"), ("NVIDIA L4", "L4"), ("Tesla T4", None)])
def test_gpu_names_find_their_table_entry(name: str, entry: str | None) -> None:
    peak = gpu_peak(name)
    assert (peak.name if peak else None) == entry


def test_dry_run_json_carries_the_cost(own_cache: Path) -> None:
    args = ["run", "--methods", "nayer,dafl", "--ratio", "0.02", "--device", "cpu", "--amp", "off",
            "--set", "nayer.g_steps=2", "--dry-run", "--format", "json"]
    plans = json.loads(ok(args))
    for plan in plans:
        cost = plan["cost"]
        assert cost["synth_tflop"] > 0 and cost["kd_tflop"] > 0 and cost["assumption"] is True
        assert cost["total_s"] == pytest.approx(cost["synth_s"] + cost["kd_s"], abs=1e-2)
        assert cost["device"] == device_name(torch.device("cpu")) and cost["precision"] == "fp32"
    save(calibration())
    assert all(p["cost"]["basis"].startswith("calibrated on") for p in json.loads(ok(args)))


def test_dry_runs_print_predicted_seconds_and_device_hours(own_cache: Path, tmp_path: Path) -> None:
    out = ok(["run", "--methods", "nayer", "--ratio", "0.02", "--device", "cpu", "--set", "nayer.g_steps=2",
              "--dry-run"])
    assert "predicted synth" in out and "TFLOP" in out
    assert "device-hours of synthesis + KD for 1 runs" in out and "assumed: 25% of the" in out
    spec = tmp_path / "grid.toml"
    spec.write_text('dataset = "digits"\nmethods = ["nayer"]\nratios = [0.02]\nseeds = [0, 1]\ndevice = "cpu"\n'
                    '[set]\n"nayer.g_steps" = 2\n')
    printed = ok(["sweep", str(spec), "--out", str(tmp_path / "out"), "--dry-run"])
    predicted = [line for line in printed.splitlines() if "to do" in line and "predicted" in line]
    assert len(predicted) == 2 and "device-hours of synthesis + KD for 2 runs" in printed
