"""Whole runs on digits with tiny budgets: the end-to-end CLI run and its output files, caching and
--force, resume after an interruption, diverged and failed runs, and the teacher cache."""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import dfkd_bench
import dfkd_bench.teachers as teachers
from dfkd_bench import Method, RunConfig, SyntheticBatch, register_method
from dfkd_bench.cli import main
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import Normalize
from dfkd_bench.engine import checkpoint as ckpt
from dfkd_bench.engine.evaluate import accuracy
from dfkd_bench.models import create_model
from dfkd_bench.runner import run_many
from dfkd_bench.schedule import RoundInfo
from dfkd_bench.teachers import file_sha256, get_teacher, recipe_for, teacher_path, trained_teacher

REQUIRED_COLUMNS = ["run_id", "method", "dataset", "teacher", "student", "ratio", "resolution", "seed",
                    "n_synthetic", "teacher_acc", "student_acc", "synth_s", "kd_s", "eval_s", "total_s",
                    "peak_mem_mb", "device", "status", "error", "started_at", "version", "smoke", "protocol",
                    "time_budget", "budget", "synth_batch", "kd_batch", "world_size", "bank_tier", "synth_tflop",
                    "kd_tflop", "synth_tflops", "kd_tflops", "protocol_notes", "kd_steps", "paper_kd_steps",
                    "rounds", "round_images", "tolerance_s", "unit_s", "num_classes", "amp", "device_name"]
N_SYNTHETIC = round(0.05 * 1437)  # ratio 0.05 of the digits training split
ROUNDS = math.ceil(N_SYNTHETIC / 16)


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), list(reader)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- end to end through the CLI


@pytest.fixture(scope="module")
def e2e(tmp_path_factory: pytest.TempPathFactory, digits_teacher, tiny_args) -> tuple[Path, list[str]]:
    """One finished CLI run of fast and deepinversion on digits; returns (out dir, the command)."""
    out = tmp_path_factory.mktemp("e2e") / "results"
    args = run_args(["fast", "deepinversion"], out, tiny_args)
    main(args + ["--quiet"])
    return out, args


def run_args(methods: list[str], out: Path, tiny_args: Any) -> list[str]:
    return ["run", "--methods", ",".join(methods), "--dataset", "digits", "--ratio", "0.05", "--seed", "0",
            "--device", "cpu", "--out", str(out), *tiny_args(*methods)]


def test_end_to_end_writes_every_output(e2e, digits_teacher, digits_data) -> None:
    out, _ = e2e
    _, card = digits_teacher
    spec, data = digits_data
    columns, rows = read_csv(out / "runs.csv")
    assert columns == REQUIRED_COLUMNS
    assert [r["method"] for r in rows] == ["fast", "deepinversion"]
    for row in rows:
        assert row["status"] == "ok" and row["error"] == ""
        assert (row["dataset"], row["teacher"], row["student"]) == ("digits", "digits_resnet8", "digits_resnet8_slim")
        assert float(row["ratio"]) == 0.05 and row["resolution"] == "32" and row["seed"] == "0"
        assert int(row["n_synthetic"]) == N_SYNTHETIC
        assert (int(row["rounds"]), row["num_classes"], row["tolerance_s"], row["unit_s"]) == (ROUNDS, "10", "", "")
        assert int(row["kd_steps"]) > 0 and row["paper_kd_steps"] == ""
        assert row["world_size"] == "1" and (row["synth_batch"], row["kd_batch"]) == ("16", "32")
        assert float(row["synth_tflop"]) > 0 and float(row["kd_tflop"]) > 0 and float(row["kd_tflops"]) > 0
        assert float(row["teacher_acc"]) == pytest.approx(card.test_acc, abs=0.01)  # the cached teacher
        assert 0 <= float(row["student_acc"]) <= 100
        seconds = [float(row[k]) for k in ("synth_s", "kd_s", "eval_s")]
        assert all(s >= 0 for s in seconds) and float(row["synth_s"]) > 0 and float(row["kd_s"]) > 0
        assert float(row["total_s"]) == pytest.approx(sum(seconds), abs=0.021)
        assert float(row["peak_mem_mb"]) > 0
        assert row["device"] == "cpu" and row["version"] == dfkd_bench.__version__ and row["started_at"]
        assert row["run_id"].startswith(f"{row['method']}-digits-r0.05-32px-s0-")

        run_dir = out / "runs" / row["run_id"]
        assert {p.name for p in run_dir.iterdir()} == {"config.json", "curve.csv", "samples.png", "samples.npz",
                                                       "log.txt", "student.pt"}  # the checkpoint is gone once done
        config = json.loads((run_dir / "config.json").read_text())
        assert config["run_id"] == row["run_id"] and config["method"] == row["method"]
        assert config["n_synthetic"] == N_SYNTHETIC and config["ratio"] == 0.05
        assert config["teacher_card"]["sha256"] == card.sha256
        assert config["hparams"]["synth_batch"] == 16 and config["hparams"]["kd_steps"] == 4
        own = ("g_steps", 2) if row["method"] == "fast" else ("iterations", 4)
        assert config["hparams"][own[0]] == own[1]  # the --set overrides were applied

        header, curve = read_csv(run_dir / "curve.csv")
        assert header == ["round", "images", "elapsed_s", "student_acc"]
        assert [int(p["round"]) for p in curve] == list(range(1, ROUNDS + 1))
        assert [int(p["images"]) for p in curve] == [min(16 * r, N_SYNTHETIC) for r in range(1, ROUNDS + 1)]
        elapsed = [float(p["elapsed_s"]) for p in curve]
        assert elapsed == sorted(elapsed)
        assert curve[-1]["student_acc"] == row["student_acc"]

        with Image.open(run_dir / "samples.png") as img:
            assert img.format == "PNG"
            assert img.size == (16 * 33 + 1, 4 * 33 + 1)  # 64 images of 32 px, 16 a row, 1 px padding
        arrays = np.load(run_dir / "samples.npz")
        assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (64, 3, 32, 32)
        assert list(arrays["class_names"]) == list(get_dataset("digits").class_names)
        assert arrays["labels"].min() >= 0 and arrays["labels"].max() < 10
        log = (run_dir / "log.txt").read_text()
        assert f"round {ROUNDS}/{ROUNDS}" in log and "done:" in log

        saved = torch.load(run_dir / "student.pt", map_location="cpu", weights_only=True)
        assert saved["arch"] == "digits_resnet8_slim" and saved["num_classes"] == 10
        student = create_model("digits_resnet8_slim", 10)
        student.load_state_dict(saved["state_dict"])
        acc = accuracy(student, data.test_split(), Normalize(spec.mean, spec.std))
        assert f"{acc:.2f}" == row["student_acc"]  # the reported accuracy is the saved student's


def test_repeated_command_is_cached(e2e, capsys: pytest.CaptureFixture[str]) -> None:
    out, args = e2e
    before = files_of(out)
    main(args)
    printed = capsys.readouterr().out
    assert printed.count("[cached]") == 2
    assert files_of(out) == before  # nothing rerun, rewritten or appended (runs.csv, logs, students)


def test_force_redoes_the_run(e2e, tmp_path: Path, tiny_args, capsys: pytest.CaptureFixture[str]) -> None:
    src, _ = e2e
    out = tmp_path / "results"
    shutil.copytree(src, out)
    _, before = read_csv(out / "runs.csv")
    fast_id = before[0]["run_id"]
    di_log = (out / "runs" / before[1]["run_id"] / "log.txt").read_bytes()
    main(run_args(["fast"], out, tiny_args) + ["--force"])
    printed = capsys.readouterr().out
    assert "[ok]" in printed and "[cached]" not in printed
    _, after = read_csv(out / "runs.csv")
    assert [r["run_id"] for r in after] == [r["run_id"] for r in before]  # replaced in place, not appended
    assert after[1] == before[1]
    assert after[0]["status"] == "ok" and after[0]["student_acc"] == before[0]["student_acc"]  # same seed
    assert (out / "runs" / fast_id / "log.txt").read_text().count("done:") == 2  # ran a second time
    assert (out / "runs" / before[1]["run_id"] / "log.txt").read_bytes() == di_log


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("method", ["fast", "deepinversion"])
def test_interrupted_run_resumes_to_the_same_student(tmp_path: Path, digits_teacher, tiny, method: str) -> None:
    overrides = {**tiny[method], "eval_every": "2", "final_kd_steps": "3"}
    config = RunConfig(method=method, dataset="digits", ratio=0.05, seed=0, device="cpu", overrides=overrides)

    [full] = run_many([config], tmp_path / "full")

    def stop_after_round_2(res: Any, r: int, n: int, state: Any) -> None:
        if r == 2:
            raise KeyboardInterrupt

    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        run_many([config], part, on_round=stop_after_round_2)
    run_dir = part / "runs" / full["run_id"]
    assert (run_dir / "checkpoint.pt").is_file()
    assert ckpt.load(run_dir / "checkpoint.pt")["state"].next_round == 2
    assert not (part / "runs.csv").exists() and not (run_dir / "student.pt").exists()

    seen: list[int] = []
    [resumed] = run_many([config], part, on_round=lambda res, r, n, state: seen.append(r))
    assert seen == list(range(3, ROUNDS + 1))  # continued after round 2, did not start over
    assert resumed["status"] == "ok" and resumed["student_acc"] == full["student_acc"]
    assert not (run_dir / "checkpoint.pt").exists()

    a = torch.load(tmp_path / "full" / "runs" / full["run_id"] / "student.pt", weights_only=True)["state_dict"]
    b = torch.load(run_dir / "student.pt", weights_only=True)["state_dict"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    _, curve_full = read_csv(tmp_path / "full" / "runs" / full["run_id"] / "curve.csv")
    _, curve_part = read_csv(run_dir / "curve.csv")
    keys = ("round", "images", "student_acc")  # elapsed_s is wall-clock and differs
    assert [[p[k] for k in keys] for p in curve_part] == [[p[k] for k in keys] for p in curve_full]


# --------------------------------------------------------------------------- divergence and failure


def test_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path: Path, digits_teacher, tiny_args,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    args = ["run", "--methods", "fast,deepinversion", "--ratio", "0.05", "--device", "cpu", "--out", str(out),
            *tiny_args("fast", "deepinversion"), "--set", "fast.lr=1e30"]  # KD from round 2 (1 warm-up round)
    main(args)
    printed = capsys.readouterr().out
    _, rows = read_csv(out / "runs.csv")
    assert [(r["method"], r["status"]) for r in rows] == [("fast", "diverged"), ("deepinversion", "ok")]
    assert "nan" in rows[0]["error"].lower() and rows[0]["student_acc"] == "nan"
    assert "diverged" in printed
    diverged_dir = out / "runs" / rows[0]["run_id"]
    assert "diverged" in (diverged_dir / "log.txt").read_text()
    assert not (diverged_dir / "checkpoint.pt").exists()  # finished: no resume state left behind
    # a diverged run is finished: the same command does not redo it
    before = files_of(out)
    main(args)
    assert capsys.readouterr().out.count("[cached]") == 2 and files_of(out) == before


@pytest.mark.usefixtures("clean_methods")
def test_nan_images_diverge_and_exceptions_fail_without_stopping(tmp_path: Path, digits_teacher) -> None:
    @register_method("nan_images")
    class NanImages(Method):
        """Returns NaN images."""

        def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
            x = torch.full((n, 3, self.ctx.resolution, self.ctx.resolution), float("nan"))
            return SyntheticBatch(x, torch.zeros(n, dtype=torch.long))

    @register_method("boom")
    class Boom(Method):
        """Raises."""

        def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
            raise RuntimeError("boom in synthesis")

    configs = [RunConfig(method=m, ratio=0.05, device="cpu") for m in ("nan_images", "boom", "nan_images")]
    configs[2].seed = 1
    rows = run_many(configs, tmp_path)
    assert [r["status"] for r in rows] == ["diverged", "failed", "diverged"]
    assert "synthesis diverged" in rows[0]["error"]
    assert rows[1]["error"] == "RuntimeError: boom in synthesis"
    assert "Traceback" in (tmp_path / "runs" / rows[1]["run_id"] / "log.txt").read_text()
    _, saved = read_csv(tmp_path / "runs.csv")
    assert [r["status"] for r in saved] == ["diverged", "failed", "diverged"]
    # a failed run is retried by the next call, the diverged ones are not
    started: list[str] = []
    run_many(configs, tmp_path, on_start=lambda res: started.append(res.method_cls.name))
    assert started == ["boom"]


# --------------------------------------------------------------------------- the teacher cache


def test_teacher_is_trained_once_then_loaded_from_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           digits_data) -> None:
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path))
    spec, data = digits_data
    calls: list[int] = []
    real_train = teachers.train_teacher

    def spy(*args: Any, **kwargs: Any) -> torch.nn.Module:
        calls.append(1)
        return real_train(*args, **kwargs)

    monkeypatch.setattr(teachers, "train_teacher", spy)
    recipe = recipe_for(spec, epochs=1)
    model, card = get_teacher(spec, "digits_resnet8_slim", data, torch.device("cpu"), seed=1, recipe=recipe)
    assert calls == [1]
    path = teacher_path("digits", "digits_resnet8_slim", 1)
    assert path.is_file() and path.parent == tmp_path / "teachers" / "digits"
    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk["dataset"] == "digits" and on_disk["arch"] == "digits_resnet8_slim"
    assert on_disk["seed"] == 1 and on_disk["recipe"] == asdict(recipe) and on_disk["num_classes"] == 10
    assert on_disk["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    acc = accuracy(model, data.test_split(), Normalize(spec.mean, spec.std))
    assert on_disk["test_acc"] == pytest.approx(acc)
    assert not model.training and not any(p.requires_grad for p in model.parameters())

    again, card2 = get_teacher(spec, "digits_resnet8_slim", data, torch.device("cpu"), seed=1, recipe=recipe)
    assert calls == [1]  # loaded, not retrained
    assert card2 == card
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))

    # a user checkpoint (here the cached file) is imported as is: same weights, the file's sha256 recorded
    mine, card3 = get_teacher(spec, "digits_resnet8_slim", data, torch.device("cpu"), checkpoint=path)
    assert calls == [1] and card3.source_sha256 == card.sha256 and card3.test_acc == pytest.approx(acc)
    assert card3.source == f"imported:{path.resolve()}" and card3.sha256 == file_sha256(Path(card3.path))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), mine.state_dict().values()))

    # training again (`teacher train`) rewrites weights and card
    monkeypatch.setattr(teachers, "train_teacher",
                        lambda spec, arch, *a, **k: (calls.append(2), create_model(arch, 10).eval())[1])
    _, card4 = trained_teacher(spec, "digits_resnet8_slim", data, torch.device("cpu"), seed=1, recipe=recipe)
    assert calls == [1, 2]
    assert card4.sha256 == hashlib.sha256(path.read_bytes()).hexdigest() != card.sha256
    assert json.loads(path.with_suffix(".json").read_text())["sha256"] == card4.sha256


# --------------------------------------------------------------------------- quality (slow, -m slow)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["fast", "deepinversion"])
def test_digits_presets_distil_a_useful_student(tmp_path: Path, digits_teacher, method: str) -> None:
    """The digits presets at ratio 0.2 (287 images) take the student far above chance (10%)
    (about 93% for fast and 87% for deepinversion with the fixture's teacher; ~30-80 s each)."""
    [row] = run_many([RunConfig(method=method, ratio=0.2, device="cpu")], tmp_path)
    assert row["status"] == "ok" and float(row["student_acc"]) > 60
