"""The dry-run FLOP counts (dfkd_bench.cost.count, on the meta device) equal the synth_tflop/kd_tflop that
real runs record with the same settings: digits bank, online and multi-resolution runs, and CIFAR-10 smoke
runs; a long round's extrapolated count equals the full count; ImageNet at 224 px counts without data."""

from __future__ import annotations

import csv
import json
import resource
from pathlib import Path

import pytest

import dfkd_bench.cost.count as count_module
from dfkd_bench.cost.count import count_run
from dfkd_bench.options import RunConfig
from dfkd_bench.resolve import resolve, resolve_all
from cli_helpers import ok

pytestmark = pytest.mark.filterwarnings("ignore::dfkd_bench.data.DataWarning")

# A handful of rounds and steps each, with a partial last round and warm-up (several work keys), and step
# counts above the extrapolation's base (so the extrapolated round is what is compared).
DIGITS_SETS = {
    "nayer": ["nayer.synth_batch=16", "nayer.g_steps=3", "nayer.kd_steps=2", "nayer.kd_batch=32",
              "nayer.final_kd_steps=1"],
    "dafl": ["dafl.kd_batch=32", "dafl.round_steps=3", "dafl.g_steps=3", "dafl.s_steps=2", "dafl.kd_per_image=0.1",
             "dafl.final_kd_steps=2"],
    "muse": ["muse.synth_batch=8", "muse.g_steps=3", "muse.kd_steps=2", "muse.kd_batch=16",
             "muse.final_kd_steps=1"],
    "cmi": ["cmi.synth_batch=8", "cmi.g_steps=3", "cmi.kd_steps=2", "cmi.kd_batch=16", "cmi.n_neg=12",
            "cmi.final_kd_steps=0"],
}


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return {row["run_id"]: row for row in csv.DictReader(fh)}


def set_args(sets: list[str]) -> list[str]:
    return [arg for item in sets for arg in ("--set", item)]


def plans(args: list[str]) -> dict[str, dict]:
    """The dry-run plans of a `run` command line by run id (`run --dry-run --format json`)."""
    return {p["run_id"]: p for p in json.loads(ok(["run", *args, "--dry-run", "--format", "json", "--quiet"]))}


def assert_counts_equal_rows(out: Path, args: list[str]) -> None:
    """Every run's counted TFLOP (its dry-run plan's cost) is what its runs.csv row recorded."""
    rows, planned = rows_of(out), plans(args)
    assert set(rows) == set(planned)
    for run_id, plan in planned.items():
        row, cost = rows[run_id], plan["cost"]
        assert row["status"] == "ok", row
        assert row["synth_tflop"] == f"{cost['synth_tflop']:.6g}", (run_id, row["synth_tflop"], cost)
        assert row["kd_tflop"] == f"{cost['kd_tflop']:.6g}", (run_id, row["kd_tflop"], cost)


@pytest.mark.parametrize("methods,extra", [
    ("nayer,dafl", []),                                   # a bank method and an online method
    ("muse", ["--multi-resolution", "8,16"]),             # MUSE generating at two resolutions in turn
    ("cmi", []),                                          # state that shapes later rounds (its feature bank)
])
def test_digits_counts_equal_recorded(methods: str, extra: list[str], digits_teacher, tmp_path: Path) -> None:
    sets = [s for m in methods.split(",") for s in DIGITS_SETS[m]]
    args = ["--methods", methods, "--ratio", "0.03", "--device", "cpu", *extra, *set_args(sets)]
    ok(["run", *args, "--out", str(tmp_path), "--quiet"])
    assert_counts_equal_rows(tmp_path, args)


@pytest.mark.usefixtures("module_cache")
def test_cifar_smoke_counts_equal_recorded(cifar_root: Path, tmp_path: Path) -> None:
    ok(["teacher", "train", "--dataset", "cifar10", "--arch", "wrn16_1", "--data-root", str(cifar_root), "--smoke",
        "--device", "cpu", "--quiet"])
    args = ["--methods", "nayer,fast,dfad", "--dataset", "cifar10", "--ratio", "0.1", "--data-root", str(cifar_root),
            "--teacher", "wrn16_1", "--student", "resnet8", "--smoke", "--device", "cpu"]
    ok(["run", *args, "--out", str(tmp_path), "--quiet"])
    assert_counts_equal_rows(tmp_path, args)


def test_extrapolated_round_equals_the_full_count(monkeypatch: pytest.MonkeyPatch) -> None:
    config = RunConfig(method="nayer", dataset="digits", ratio=0.02, device="cpu",
                       overrides={"g_steps": "5", "synth_batch": "16"})
    res = resolve(config, need_data=False)
    extrapolated = count_run(res)
    monkeypatch.setattr(count_module, "_COUNTED", {})
    monkeypatch.setattr(count_module, "STEP_FIELDS", {"g_steps": 5})  # the base is the run's own count
    full = count_run(res)
    assert (full.synth.total, full.kd.total) == (extrapolated.synth.total, extrapolated.kd.total)
    assert extrapolated.synth.total.flops > 0


def test_imagenet_224_counts_without_data_or_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DFKD_BENCH_DATA", raising=False)
    (res,) = resolve_all([RunConfig(method="nayer", dataset="imagenet", ratio=0.0005, resolution=224,
                                    device="cpu")], need_data=False)
    assert res.source is None
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    counted = count_run(res)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    hp = res.run_hparams
    # a student step: at least the two ResNets' forwards (ResNet-34 ~3.6, ResNet-18 ~1.8 GFLOPs an image)
    # and the student's backward, on every image of the batch
    (step, _), = counted.kd.pieces.values()
    assert step.flops > hp.kd_batch * (3.6e9 + 3 * 1.8e9) * 2 * 0.9
    assert counted.kd.total.flops == step.flops * res.schedule.kd_steps
    assert counted.synth.total.flops > 0
    assert grown_mib < 1024  # a real 224 px step of that batch would need several GiB
