"""`dfkd-bench calibrate`: the fit of a phase's time model, the calibration file written under
$DFKD_BENCH_CACHE/calibration/<device-name>.json and read back, and its one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

import dfkd_bench.cost.probes as probes_module
from dfkd_bench.cost.probes import Probe
from dfkd_bench.cost.rates import PhaseRate, Point, calibration_path, fit, load
from dfkd_bench.engine.precision import device_name
from cli_helpers import ok, one_line_error

TINY_PROBES = (Probe("synth", "nayer", "digits", {"synth_batch": 8, "g_steps": 1}),
               Probe("kd", "nayer", "digits", {"kd_batch": 8}))


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def points_of(rate: PhaseRate, works: list[tuple[int, int, int]]) -> list[Point]:
    """Points that `rate` explains exactly."""
    return [Point("kd", f"p{i}", flops, ops, nbytes, rate.seconds(Point("kd", "", flops, ops, nbytes, 1.0).work))
            for i, (flops, ops, nbytes) in enumerate(works)]


def test_fit_recovers_the_rates_that_made_the_points() -> None:
    rate = PhaseRate(seconds_per_op=2e-5, flops_per_second=5e10, bytes_per_second=4e9)
    got = fit(points_of(rate, [(10**9, 300, 10**7), (10**11, 700, 10**9), (5 * 10**9, 5000, 3 * 10**8),
                               (3 * 10**10, 100, 2 * 10**7)]))
    assert got.seconds_per_op == pytest.approx(rate.seconds_per_op, rel=1e-6)
    assert got.flops_per_second == pytest.approx(rate.flops_per_second, rel=1e-6)
    assert got.bytes_per_second == pytest.approx(rate.bytes_per_second, rel=1e-6)


def test_fit_drops_a_term_the_points_cannot_carry() -> None:
    """Points proportional to their FLOPs alone: the per-operator and per-byte terms drop out."""
    points = [Point("synth", f"p{i}", flops, ops, nbytes, flops / 1e10)
              for i, (flops, ops, nbytes) in enumerate([(10**9, 500, 10**8), (10**10, 100, 10**7), (4 * 10**9, 900, 10**9)])]
    got = fit(points)
    assert got.flops_per_second == pytest.approx(1e10, rel=1e-6)
    assert got.seconds_per_op == 0 and math.isinf(got.bytes_per_second)


def test_calibrate_writes_the_device_file_and_it_reads_back(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes_module, "CPU_PROBES", TINY_PROBES)
    monkeypatch.setattr(probes_module, "SECONDS_PER_PROBE", 0.01)
    out = ok(["calibrate", "--device", "cpu", "--amp", "off", "--quiet"])
    path = calibration_path(device_name(torch.device("cpu")))
    assert out.strip() == f"calibration: {path}" and path.parent == own_cache / "calibration"
    stored = json.loads(path.read_text())
    assert stored["device_name"] == device_name(torch.device("cpu")) and list(stored["entries"]) == ["fp32"]
    calibration = load(device_name(torch.device("cpu")), "fp32")
    assert calibration is not None and load(device_name(torch.device("cpu")), "bf16") is None
    assert calibration.threads == torch.get_num_threads() and calibration.device_type == "cpu"
    assert [p.label for p in calibration.points] == [p.label for p in TINY_PROBES]
    assert all(p.seconds > 0 and p.flops > 0 and p.ops > 0 for p in calibration.points)
    assert set(calibration.phases) == {"synth", "kd"} and calibration.counter_seconds_per_op >= 0
    assert "calibrated on" in calibration.label() and "fp32" in calibration.label()


def test_calibrate_shows_its_table_unless_quiet(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes_module, "CPU_PROBES", TINY_PROBES)
    monkeypatch.setattr(probes_module, "SECONDS_PER_PROBE", 0.01)
    out = ok(["calibrate", "--device", "cpu", "--amp", "off"])
    assert "synth: nayer on digits" in out and "GFLOP/s" in out and "FLOP counter:" in out


def test_calibrate_errors_are_one_line(own_cache: Path) -> None:
    if not torch.cuda.is_available():
        one_line_error(["calibrate", "--device", "cuda"], "--device cuda", "no CUDA device")
    path = calibration_path(device_name(torch.device("cpu")))
    path.parent.mkdir(parents=True)
    path.write_text("not json")
    with pytest.raises(Exception, match="is not a calibration file"):
        load(device_name(torch.device("cpu")), "fp32")
