"""`--log tensorboard|wandb`: each run's curve, phase seconds, loss terms and sample grids mirrored live;
off by default; bad names and missing packages refused before any run."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import ok, one_line_error

from dfkd_bench.outputs import read_runs


def tiny_run(out: Path, tiny_args: Any, *extra: str) -> dict[str, str]:
    """One tiny NAYER-free digits run (Fast) with evaluation every round; its runs.csv row."""
    ok(["run", "--methods", "fast", "--ratio", "0.05", "--out", str(out), "--quiet", *tiny_args("fast"),
        "--set", "fast.final_kd_steps=3", *extra])
    (row,) = read_runs(out).values()
    assert row["status"] == "ok"
    return row


def curve_of(out: Path, run_id: str) -> list[dict[str, str]]:
    with open(out / "runs" / run_id / "curve.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_tensorboard_events_mirror_the_curve(digits_teacher: Any, tmp_path: Path, tiny_args: Any) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    row = tiny_run(tmp_path, tiny_args, "--log", "tensorboard")
    events = EventAccumulator(str(tmp_path / "tensorboard" / row["run_id"]), size_guidance={"images": 0})
    events.Reload()
    curve = curve_of(tmp_path, row["run_id"])
    acc = events.Scalars("eval/student_acc")
    assert [round(e.value, 2) for e in acc] == [float(p["student_acc"]) for p in curve]
    assert [round(e.value, 3) for e in events.Scalars("eval/elapsed_s")] == \
        pytest.approx([float(p["elapsed_s"]) for p in curve], abs=1e-3)
    steps = [e.step for e in acc]
    assert steps == sorted(steps) and len(set(steps)) == len(steps)  # one point a step, the final one last
    tags = events.Tags()["scalars"]
    assert {"loss/synth/oh", "loss/synth/bn", "loss/kd/kd", "seconds/synth", "seconds/kd", "images"} <= set(tags)
    assert events.Scalars("final/student_acc")[-1].value == pytest.approx(float(row["student_acc"]), abs=0.01)
    images = events.Images("samples")
    assert len(images) == len(curve) and images[0].width > 0


def test_tracking_is_off_by_default(digits_teacher: Any, tmp_path: Path, tiny_args: Any) -> None:
    tiny_run(tmp_path, tiny_args)
    assert not (tmp_path / "tensorboard").exists() and not (tmp_path / "wandb").exists()


def test_wandb_offline_run_is_written_under_the_run_id(digits_teacher: Any, tmp_path: Path, tiny_args: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    row = tiny_run(tmp_path, tiny_args, "--log", "wandb")
    runs = list((tmp_path / "wandb").glob(f"offline-run-*-{row['run_id']}"))
    assert len(runs) == 1
    (records,) = runs[0].glob("*.wandb")
    blob = records.read_bytes()
    assert b"eval/student_acc" in blob and b"loss/synth/bn" in blob and row["run_id"].encode() in blob


def test_unknown_tracker_is_refused_before_any_run(tmp_path: Path) -> None:
    one_line_error(["run", "--methods", "fast", "--log", "mlflow", "--out", str(tmp_path)], "--log", "tensorboard",
                   "wandb")
    assert not (tmp_path / "runs.csv").exists()


def test_missing_tracker_package_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    one_line_error(["run", "--methods", "fast", "--log", "wandb", "--out", str(tmp_path)], "dfkd-bench[wandb]")


def test_sweep_takes_log_and_refuses_it_with_submitit(tmp_path: Path) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text('methods = ["fast"]\nratios = [0.05]\n')
    one_line_error(["sweep", str(spec), "--log", "mlflow", "--out", str(tmp_path)], "--log", "tensorboard")
    one_line_error(["sweep", str(spec), "--launcher", "submitit", "--log", "tensorboard", "--out", str(tmp_path)],
                   "--log", "--launcher local")
