"""`sweep --launcher submitit`: the [launcher] table, a job array on submitit's local executor (each task
writes only its own shard folder, the merge holds every run once), resuming without redoing anything, a
failed run and a failed task, and the one-line refusals. SLURM itself is faked with stub commands."""

from __future__ import annotations

import csv
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from cli_helpers import ok, one_line_error, run_cli
from conftest import TINY
from dfkd_bench.launcher import LauncherSettings, error_line, parse_launcher, run_shard_task, shard_folder
from dfkd_bench.resolve import resolve
from dfkd_bench.sweep import load_sweep, shard

submitit = pytest.importorskip("submitit")

FAILING_PLUGIN = '''
from dataclasses import dataclass
from typing import Any, ClassVar

from dfkd_bench import Method, MethodHparams, UserError, register_method


@dataclass
class SmallHparams(MethodHparams):
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"digits": dict(synth_batch=16, kd_steps=4, kd_batch=32)}


@register_method("boom", "Raises inside synthesis: the run is recorded as failed")
class Boom(Method):
    Hparams = SmallHparams

    def synthesize(self, n, round=None):
        raise RuntimeError("synthesis exploded")


@register_method("crash", "Raises a UserError inside synthesis: the whole task stops")
class Crash(Method):
    Hparams = SmallHparams

    def synthesize(self, n, round=None):
        raise UserError("crash refuses to synthesize")
'''


def write_spec(tmp_path: Path, methods: tuple[str, ...] = ("fast",), seeds: tuple[int, ...] = (0, 1),
               launcher: str = 'cluster = "local"\ntasks = 2\n') -> Path:
    """A tiny digits grid (about a second a run) with the given [launcher] table."""
    sets = "".join(f'"fast.{k}" = "{v}"\n' for k, v in TINY["fast"].items())
    spec = tmp_path / "grid.toml"
    spec.write_text(f'dataset = "digits"\nmethods = {json.dumps(list(methods))}\nratios = [0.05]\n'
                    f'seeds = {json.dumps(list(seeds))}\ndevice = "cpu"\n\n[set]\n{sets}\n[launcher]\n{launcher}')
    return spec


def rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def warm_caches(digits_teacher, digits_data) -> None:
    """Teacher and test split cached before any task starts, so the tasks only read the cache."""
    digits_data[1].test_split()


# --------------------------------------------------------------------------- the [launcher] table

def test_launcher_table_defaults_and_values(tmp_path: Path) -> None:
    defaults = parse_launcher({}, "grid.toml")
    assert defaults == LauncherSettings()
    assert (defaults.cluster, defaults.gpus_per_task, defaults.time_min, defaults.partition) == ("slurm", 1, 240, None)
    assert defaults.task_count(5) == 5 and defaults.task_count(5000) == 1000
    settings = parse_launcher({"partition": "gpu", "gpus_per_task": 2, "cpus_per_task": 8, "time_min": 60,
                               "array_parallelism": 4, "tasks": 10, "mem_gb": 32, "cluster": "local",
                               "setup": ["module load cuda"]}, "grid.toml")
    assert settings.setup == ("module load cuda",) and settings.mem_gb == 32
    assert settings.task_count(3) == 3 and settings.task_count(50) == 10
    assert parse_launcher({"cluster": "local"}, "g").task_count(100) == 32  # the local executor starts all at once
    params = settings.executor_parameters()
    assert params["slurm_partition"] == "gpu" and params["gpus_per_node"] == 2 and params["timeout_min"] == 60
    assert params["tasks_per_node"] == 1 and params["slurm_array_parallelism"] == 4


@pytest.mark.parametrize("table, pieces", [
    ("gpus = 2\n", ["unknown [launcher] keys gpus", "gpus_per_task", "partition"]),
    ("time_min = 0\n", ["time_min = 0", "integer >= 1"]),
    ("tasks = -3\n", ["tasks = -3", "integer >= 1"]),
    ("gpus_per_task = 1.5\n", ["gpus_per_task = 1.5", "integer >= 0"]),
    ("mem_gb = 0\n", ["mem_gb = 0", "number > 0"]),
    ('cluster = "kubernetes"\n', ["cluster = 'kubernetes'", "slurm, local, debug"]),
    ('setup = "module load cuda"\n', ["setup", "list of shell lines"]),
    ("array_parallelism = true\n", ["array_parallelism = True", "integer >= 1"]),
])
def test_bad_launcher_table_is_one_line(tmp_path: Path, table: str, pieces: list[str]) -> None:
    spec = write_spec(tmp_path, launcher=table)
    one_line_error(["sweep", str(spec), "--launcher", "submitit", "--dry-run"], *pieces)


def test_launcher_must_be_a_table(tmp_path: Path) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text('methods = ["fast"]\nlauncher = "slurm"\n')
    one_line_error(["sweep", str(spec), "--launcher", "submitit", "--dry-run"], "launcher must be a table")
    assert len(load_sweep(write_spec(tmp_path))) == 2  # a plain sweep reads past the [launcher] table


def test_dry_run_lists_the_plan_and_the_launcher(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, launcher='partition = "gpu"\ngpus_per_task = 2\ntime_min = 90\n')
    printed = ok(["sweep", str(spec), "--out", str(tmp_path / "out"), "--launcher", "submitit", "--dry-run"])
    assert "2 runs: 0 done, 2 to do" in printed
    assert "launcher: 2 tasks for 2 runs on slurm (partition gpu, 2 GPU(s), time limit 90 min per task" in printed
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------- refusals

def test_refusals_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path)
    base = ["sweep", str(spec), "--out", str(tmp_path / "out")]
    one_line_error([*base, "--launcher", "submitit", "--shard", "1/2"], "--shard", "makes the shards itself")
    one_line_error([*base, "--wait"], "--wait goes with --launcher submitit")
    one_line_error([*base, "--launcher", "submitit", "--force"], "--force", "needs --wait")
    monkeypatch.setitem(sys.modules, "submitit", None)
    one_line_error([*base, "--launcher", "submitit"], "needs submitit", "pip install 'dfkd-bench[slurm]'")


@pytest.mark.skipif(shutil.which("srun") is not None, reason="SLURM is installed here")
def test_slurm_cluster_without_slurm_is_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, launcher="")
    one_line_error(["sweep", str(spec), "--out", str(tmp_path / "out"), "--launcher", "submitit"],
                   "SLURM is not available", 'cluster = "local"')


def test_a_previous_submission_still_running_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "submitit_logs").mkdir(parents=True)
    (out / "submitit_logs" / "submission.json").write_text(json.dumps({"cluster": "local", "jobs": [str(os.getpid())]}))
    one_line_error(["sweep", str(write_spec(tmp_path)), "--out", str(out), "--launcher", "submitit"],
                   f"jobs {os.getpid()}", "still pending or running")
    assert not (out / "shards").exists()


def test_task_errors_fit_one_line() -> None:
    failed = submitit.core.utils.FailedJobError(
        "Job (task=0) failed during processing with trace:\n----------------------\nTraceback (most recent call "
        "last):\n  File \"x.py\", line 1\nRuntimeError: out of memory\n\n----------------------\nYou can check logs")
    assert error_line(failed) == "RuntimeError: out of memory"
    assert error_line(ValueError("bad\nthing")) == "ValueError: bad thing"


# --------------------------------------------------------------------------- SLURM through stub commands

def test_slurm_submission_with_stub_sbatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The sbatch file submitit writes carries the [launcher] table; job id, shard folders, merge command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sbatch").write_text(f'#!/bin/sh\ncp "$1" {tmp_path}/submitted.sh\necho "Submitted batch job 4242"\n')
    (bin_dir / "sacct").write_text("#!/bin/sh\nprintf 'JobID|State|NodeList\\n4242_[0-1]|PENDING|None\\n'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    spec = write_spec(tmp_path, launcher='partition = "gpu"\ngpus_per_task = 2\ntime_min = 90\n'
                                         'array_parallelism = 8\nsetup = ["module load cuda"]\n')
    out = tmp_path / "out"
    printed = ok(["sweep", str(spec), "--out", str(out), "--launcher", "submitit"])
    assert "submitted 2 of 2 tasks to slurm: job 4242" in printed
    assert f"shard folders: {out}/shards/1-of-2/ .. {out}/shards/2-of-2/ (2 folders)" in printed
    assert f"dfkd-bench merge {out}/shards/* --out {out}" in printed
    sbatch = (tmp_path / "submitted.sh").read_text()
    for line in ["--array=0-1%2", "--partition=gpu", "--gpus-per-node=2", "--time=90", "--ntasks-per-node=1",
                 "module load cuda"]:
        assert line in sbatch, line
    one_line_error(["sweep", str(spec), "--out", str(out), "--launcher", "submitit"],
                   "jobs 4242_0, 4242_1", "still pending or running")


# --------------------------------------------------------------------------- submitit's local executor

def test_job_array_on_the_local_executor_merges_every_run_once(tmp_path: Path, warm_caches) -> None:
    spec = write_spec(tmp_path)
    out = tmp_path / "out"
    command = ["sweep", str(spec), "--out", str(out), "--launcher", "submitit", "--wait"]
    printed = ok(command)
    assert "submitted 2 of 2 tasks to local" in printed
    assert f"dfkd-bench merge {out}/shards/* --out {out}" in printed
    configs = load_sweep(spec)
    shard_ids = []
    for i in (1, 2):
        expected = {resolve(c, need_data=False).run_id for c in shard(configs, i, 2)}
        assert {r["run_id"] for r in rows(shard_folder(out, i, 2))} == expected
        assert f"task {i}/2 ({shard_folder(out, i, 2)}): 1 ok, 0 failed, 0 diverged, 0 already finished" in printed
        shard_ids.append(expected)
    assert not shard_ids[0] & shard_ids[1]
    merged = rows(out)
    assert sorted(r["run_id"] for r in merged) == sorted(shard_ids[0] | shard_ids[1])
    assert all(r["status"] == "ok" for r in merged)
    assert "merged 2 runs from 2 folders" in printed

    again = ok(command)  # a repeated sweep: nothing submitted, redone or duplicated
    assert f"all 2 runs are finished under {out}; nothing to submit" in again and "task" not in again
    assert "merged 2 runs from 2 folders" in again
    assert rows(out) == merged
    assert [rows(shard_folder(out, i, 2)) for i in (1, 2)] == [
        [r for r in merged if r["run_id"] in ids] for ids in shard_ids]


def test_an_interrupted_sweep_continues_without_duplicates(tmp_path: Path, warm_caches) -> None:
    """Task 1 of 2 finished before the array was interrupted: the same command submits only task 2."""
    spec = write_spec(tmp_path, launcher='cluster = "debug"\ntasks = 2\n')
    out = tmp_path / "out"
    configs = load_sweep(spec)
    first = run_shard_task(shard(configs, 1, 2), 1, 2, str(out))
    assert first.statuses == {"ok": 1} and first.already == 0
    before = rows(shard_folder(out, 1, 2))
    printed = ok(["sweep", str(spec), "--out", str(out), "--launcher", "submitit"])  # debug: always waits
    assert "submitted 1 of 2 tasks to debug" in printed
    assert f"task 2/2 ({shard_folder(out, 2, 2)}): 1 ok, 0 failed, 0 diverged, 0 already finished" in printed
    merged = rows(out)
    assert len(merged) == 2 and len({r["run_id"] for r in merged}) == 2
    assert before[0] in merged and all(r["status"] == "ok" for r in merged)

    redone = ok(["sweep", str(spec), "--out", str(out), "--launcher", "submitit", "--force"])
    assert "submitted 2 of 2 tasks" in redone and redone.count("1 ok, 0 failed, 0 diverged, 0 already finished") == 2
    fresh = rows(shard_folder(out, 1, 2)) + rows(shard_folder(out, 2, 2))
    assert before[0] not in fresh  # redone: a later started_at
    assert sorted(map(str, rows(out))) == sorted(map(str, fresh))  # --force: the new results replace the old


def test_a_failed_run_and_a_failed_task_do_not_stop_the_others(tmp_path: Path, warm_caches, clean_methods) -> None:
    """Shard 1 runs fast (ok) then crash (its UserError ends the task); shard 2 records boom as failed."""
    plugin = tmp_path / "failing.py"
    plugin.write_text(FAILING_PLUGIN)
    spec = write_spec(tmp_path, methods=("fast", "boom", "crash"), seeds=(0,),
                      launcher='cluster = "debug"\ntasks = 2\n')
    out = tmp_path / "out"
    code, printed, err = run_cli(["--plugin", str(plugin), "sweep", str(spec), "--out", str(out),
                                  "--launcher", "submitit", "--wait"])
    assert code == 1, (printed, err)
    lines = printed.splitlines()
    assert "task 1/2 failed: UserError: crash refuses to synthesize" in lines
    assert any(line.startswith("task 2/2 (") and "0 ok, 1 failed, 0 diverged" in line for line in lines)
    merged = {r["method"]: r for r in rows(out)}
    assert set(merged) == {"fast", "boom"}
    assert merged["fast"]["status"] == "ok"
    assert merged["boom"]["status"] == "failed" and "synthesis exploded" in merged["boom"]["error"]
