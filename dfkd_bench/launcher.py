"""`sweep --launcher submitit`: a sweep's grid as a SLURM job array (through submitit), one shard per task.

Task i of n runs shard i/n into OUT/shards/<i>-of-<n>/, a folder no other process writes, skipping runs
already finished anywhere under OUT; the main process merges the shard folders into OUT (by run_id) once
every task has ended. The spec's optional [launcher] table says how to submit (see `LauncherSettings`).
"""

from __future__ import annotations

import json
import os
import re
import shlex
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .options import RunConfig
from .errors import UserError
from .merge import MergeResult, merge_outputs
from .outputs import FINISHED, RUNS_COLUMNS, read_runs, write_runs_csv

CLUSTERS = ("slurm", "local", "debug")
MAX_ARRAY = 1000  # SLURM's default MaxArraySize is 1001
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING"}
INSTALL_HINT = "pip install 'dfkd-bench[slurm]'"


@dataclass(frozen=True)
class LauncherSettings:
    """The spec's [launcher] table with defaults: SLURM resources per task and how many tasks (shards).

    `tasks` defaults to one per run, at most 1000 on SLURM and at most `array_parallelism` on the local
    executor (which starts every task at once); it is never more than the grid's runs. `cluster` is
    "slurm", "local" (submitit's local executor: subprocesses on this machine) or "debug" (in-process).
    """

    partition: str | None = None
    gpus_per_task: int = 1
    cpus_per_task: int | None = None
    time_min: int = 240
    array_parallelism: int = 32
    tasks: int | None = None
    mem_gb: float | None = None
    cluster: str = "slurm"
    setup: tuple[str, ...] = ()

    def task_count(self, runs: int) -> int:
        """How many shards a grid of `runs` runs is split into."""
        cap = MAX_ARRAY if self.cluster == "slurm" else self.array_parallelism
        return max(1, min(self.tasks or cap, runs))

    def executor_parameters(self) -> dict[str, Any]:
        """submitit AutoExecutor parameters: generic names, plus slurm_/local_ ones the other clusters ignore."""
        params: dict[str, Any] = dict(name="dfkd-bench", nodes=1, tasks_per_node=1, timeout_min=self.time_min,
                                      gpus_per_node=self.gpus_per_task, cpus_per_task=self.cpus_per_task,
                                      mem_gb=self.mem_gb, slurm_partition=self.partition,
                                      slurm_array_parallelism=self.array_parallelism)
        if self.setup:
            params.update(slurm_setup=list(self.setup), local_setup=list(self.setup))
        return params

    def describe(self, runs: int) -> str:
        """One line for `--dry-run`: tasks, cluster and the resources each task asks for."""
        resources = [f"partition {self.partition}" if self.partition else "default partition",
                     f"{self.gpus_per_task} GPU(s)", f"{self.cpus_per_task} CPUs" if self.cpus_per_task else "",
                     f"{self.mem_gb:g} GB" if self.mem_gb else "", f"time limit {self.time_min} min"]
        return (f"launcher: {self.task_count(runs)} tasks for {runs} runs on {self.cluster} "
                f"({', '.join(r for r in resources if r)} per task; at most {self.array_parallelism} at once)")


def _whole(minimum: int) -> Callable[[Any], bool]:
    """A check for an integer (not a bool) of at least `minimum`."""
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= minimum


RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "partition": (lambda v: isinstance(v, str) and bool(v.strip()), "a partition name"),
    "gpus_per_task": (_whole(0), "an integer >= 0"),
    "cpus_per_task": (_whole(1), "an integer >= 1"),
    "time_min": (_whole(1), "minutes, an integer >= 1"),
    "array_parallelism": (_whole(1), "an integer >= 1"),
    "tasks": (_whole(1), "an integer >= 1"),
    "mem_gb": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0, "a number > 0"),
    "cluster": (lambda v: v in CLUSTERS, f"one of {', '.join(CLUSTERS)}"),
    "setup": (lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v), "a list of shell lines"),
}
assert set(RULES) == {f.name for f in fields(LauncherSettings)}


def parse_launcher(table: Any, path: str | Path) -> LauncherSettings:
    """Check a [launcher] table key by key; any unknown key or bad value is a one-line UserError."""
    if not isinstance(table, dict):
        raise UserError(f"sweep file {path}: launcher must be a table ([launcher] with keys {', '.join(RULES)})")
    unknown = sorted(set(table) - set(RULES))
    if unknown:
        raise UserError(f"sweep file {path}: unknown [launcher] keys {', '.join(unknown)}; "
                        f"choose from: {', '.join(RULES)}")
    for key, value in table.items():
        check, expected = RULES[key]
        if not check(value):
            raise UserError(f"sweep file {path}: [launcher] {key} = {value!r}: expected {expected}")
    return LauncherSettings(**{k: tuple(v) if k == "setup" else v for k, v in table.items()})


def load_launcher(path: str | Path) -> LauncherSettings:
    """The [launcher] table of a sweep file (all defaults when it has none)."""
    from .sweep import read_spec

    return parse_launcher(read_spec(path).get("launcher", {}), path)


def shard_folder(out: Path, index: int, count: int) -> Path:
    """OUT/shards/<i>-of-<n>/: the one folder task i of n writes."""
    return out / "shards" / f"{index}-of-{count}"


@dataclass
class ShardSummary:
    """What one task did: statuses of the runs it ran, and how many were already finished under OUT."""

    index: int
    count: int
    folder: str
    statuses: dict[str, int] = field(default_factory=dict)
    already: int = 0
    finished: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The task's report: its folder and the runs per status."""
        counts = {"ok": 0, "failed": 0, "diverged": 0, **self.statuses}
        return (f"task {self.index}/{self.count} ({self.folder}): "
                + ", ".join(f"{n} {status}" for status, n in counts.items()) + f", {self.already} already finished")


def _finished_under(out: Path) -> set[str]:
    """run_ids finished in OUT/runs.csv or in any shard folder (read only: their tasks may be writing them)."""
    folders = [out, *sorted(p for p in (out / "shards").glob("*") if p.is_dir())]
    return {run_id for folder in folders for run_id, row in read_runs(folder).items() if row.get("status") in FINISHED}


def run_shard_task(configs: Sequence[RunConfig], index: int, count: int, out: str, plugins: Sequence[str] = (),
                   force: bool = False) -> ShardSummary:
    """One array task (picklable, top level): run one shard into its own folder and say what happened."""
    from .plugins import load_plugin
    from .resolve import resolve
    from .runner import run_many

    for plugin in plugins:
        load_plugin(plugin)
    out_dir = Path(out)
    folder = shard_folder(out_dir, index, count)
    if not (folder / "runs.csv").is_file():  # so `merge OUT/shards/*` accepts the folder from the start
        write_runs_csv(folder, [], RUNS_COLUMNS)
    done = set() if force else _finished_under(out_dir)
    todo = [c for c in configs if resolve(c, need_data=False).run_id not in done]
    summary = ShardSummary(index, count, str(folder), already=len(configs) - len(todo))

    def on_done(res: Any, row: dict[str, Any], cached: bool) -> None:
        print(f"{res.run_id}: {row.get('status')} {row.get('error') or ''}", flush=True)
        summary.statuses[row["status"]] = summary.statuses.get(row["status"], 0) + 1
        if row["status"] in FINISHED:
            summary.finished.append(res.run_id)

    run_many(todo, folder, force=force, on_done=on_done, log=lambda m: print(m, flush=True))
    return summary


def _import_submitit() -> Any:
    """The submitit module, or a one-line UserError naming the extra that installs it."""
    try:
        import submitit
    except ImportError:
        raise UserError(f"--launcher submitit needs submitit: {INSTALL_HINT}") from None
    return submitit


def _device_type(config: RunConfig, settings: LauncherSettings) -> str:
    """The device type a task will pick for `config`: "auto" is CUDA on SLURM tasks given GPUs, and this
    machine's choice for the local and debug executors."""
    import torch

    name = (config.device or "auto").lower()
    if name != "auto":
        return "cuda" if name.startswith("cuda") else "cpu"
    if settings.cluster == "slurm":
        return "cuda" if settings.gpus_per_task > 0 else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_ids(configs: Sequence[RunConfig], settings: LauncherSettings) -> list[str]:
    """Each run's id as its task will compute it, without touching a GPU here; a bad grid is refused
    before anything is queued."""
    import torch

    from .resolve import resolve

    return [replace(resolve(replace(c, device="cpu"), need_data=False),
                    device=torch.device(_device_type(c, settings))).run_id for c in configs]


def _record_path(out: Path) -> Path:
    """Where the job ids of OUT's latest submission are kept, to refuse a second one while they run."""
    return out / "submitit_logs" / "submission.json"


def _pid_alive(pid: str) -> bool:
    """Whether a local executor's controller process is still there."""
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, and someone else's
        pass
    return True


def _active_jobs(out: Path, submitit: Any) -> list[str]:
    """Jobs of OUT's previous submission still pending or running (their tasks may still write shard folders)."""
    path = _record_path(out)
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text())
        cluster, ids = record["cluster"], [str(j) for j in record["jobs"]]
    except (ValueError, KeyError, TypeError):  # a torn or foreign file: nothing known to be running
        return []
    if cluster == "local":
        return [j for j in ids if _pid_alive(j)]
    if cluster != "slurm":
        return []
    jobs = [submitit.SlurmJob(path.parent, j) for j in ids]
    return [j.job_id for j in jobs if j.watcher.get_state(j.job_id, mode="force").upper() in SLURM_ACTIVE]


def _executor(submitit: Any, out: Path, settings: LauncherSettings) -> Any:
    """An AutoExecutor for the settings' cluster, logging under OUT/submitit_logs."""
    if settings.cluster == "slurm" and submitit.SlurmExecutor.affinity() < 0:
        raise UserError('[launcher] cluster = "slurm" but SLURM is not available here (no srun on PATH); submit '
                        'from a SLURM login node, or set cluster = "local" to run the tasks on this machine')
    executor = submitit.AutoExecutor(folder=out / "submitit_logs", cluster=settings.cluster)
    executor.update_parameters(**settings.executor_parameters())
    return executor


@dataclass
class Submission:
    """A submitted job array: the grid is split into `count` shards and `tasks` holds (shard index, job) for
    the shards that had runs to do; shard i is written to shard_folder(out, i, count) by its task only."""

    out: Path
    cluster: str
    count: int
    runs: int
    tasks: list[tuple[int, Any]]

    def folders(self) -> list[Path]:
        """The shard folders of the submitted tasks."""
        return [shard_folder(self.out, i, self.count) for i, _ in self.tasks]

    def lines(self) -> list[str]:
        """What was submitted, where each task writes, and the command that combines the shard folders."""
        if not self.tasks:
            return [f"all {self.runs} runs are finished under {self.out}; nothing to submit"]
        ids = sorted({str(job.job_id).split("_")[0] for _, job in self.tasks})
        out, folders = shlex.quote(str(self.out)), self.folders()
        where = f"{folders[0]}/" if len(folders) == 1 else f"{folders[0]}/ .. {folders[-1]}/ ({len(folders)} folders)"
        return [f"submitted {len(self.tasks)} of {self.count} tasks to {self.cluster}: job {', '.join(ids)} "
                f"(logs in {self.out / 'submitit_logs'})",
                f"shard folders: {where}, each written by its task only",
                f"to combine them: dfkd-bench merge {out}/shards/* --out {out}"]


def _submit(submitit: Any, out: Path, settings: LauncherSettings, shards: list[tuple[int, list[RunConfig]]],
            count: int, plugins: Sequence[str], force: bool) -> list[Any]:
    """map_array over the shards: one task each, given absolute paths (a task may start elsewhere)."""
    executor = _executor(submitit, out, settings)
    n = len(shards)
    return executor.map_array(run_shard_task, [c for _, c in shards], [i for i, _ in shards], [count] * n,
                              [str(out.resolve())] * n, [[str(Path(p).resolve()) for p in plugins]] * n, [force] * n)


def submit_sweep(spec_path: str | Path, out_dir: str | Path, settings: LauncherSettings,
                 plugins: Sequence[str] = (), force: bool = False, machine: dict[str, Any] | None = None) -> Submission:
    """Submit a sweep file's grid (with `sweep`'s `machine` overrides) as a job array of
    `settings.task_count` shards, one folder per task; shards whose runs are all finished under OUT
    (unless `force`) are not submitted."""
    from .sweep import load_sweep, shard

    submitit = _import_submitit()
    out = Path(out_dir)
    configs = load_sweep(spec_path, machine)
    ids = _run_ids(configs, settings)
    active = _active_jobs(out, submitit)
    if active:
        raise UserError(f"jobs {', '.join(active)} of the previous submission into {out} are still pending or "
                        f"running; wait for them (or cancel them) and run again, or choose another --out")
    count = settings.task_count(len(configs))
    done = set() if force else _finished_under(out)
    indices = [i for i in range(1, count + 1) if set(ids[i - 1::count]) - done]
    shards = [(i, shard(configs, i, count)) for i in indices]
    jobs = _submit(submitit, out, settings, shards, count, plugins, force) if shards else []
    _record_path(out).parent.mkdir(parents=True, exist_ok=True)
    _record_path(out).write_text(json.dumps({"cluster": settings.cluster, "jobs": [str(j.job_id) for j in jobs]}))
    return Submission(out, settings.cluster, count, len(configs), list(zip(indices, jobs)))


@dataclass
class TaskOutcome:
    """One ended task: its summary, or the error it raised (on one line)."""

    index: int
    count: int
    summary: ShardSummary | None
    error: str | None = None

    def line(self) -> str:
        """The task's summary line, or its error."""
        return self.summary.line() if self.summary else f"task {self.index}/{self.count} failed: {self.error}"


def error_line(exc: BaseException) -> str:
    """A task's error on one line: the last line of its traceback when submitit has one, else its message."""
    parts = re.split(r"\n-{5,}\n", str(exc))
    trace = parts[1].strip().splitlines() if len(parts) >= 3 else []
    line = trace[-1] if trace else f"{type(exc).__name__}: {' '.join(str(exc).splitlines()[:2])}"
    return " ".join(line.split())[:300]


def wait_for(submission: Submission) -> Iterator[TaskOutcome]:
    """Each task's outcome, in task order, once it has ended (a task that raised is reported, never re-raised;
    asking for the exception first also keeps the debug executor out of its post-mortem debugger)."""
    for i, job in submission.tasks:
        exc = job.exception()
        if exc is not None:
            yield TaskOutcome(i, submission.count, None, error_line(exc))
        else:
            yield TaskOutcome(i, submission.count, job.result())


def _forget(out: Path, run_ids: set[str]) -> None:
    """Drop rows from OUT/runs.csv so that `--force`d results from the shards replace them in the merge."""
    rows = read_runs(out)
    if rows and run_ids & set(rows):
        columns = list(next(iter(rows.values())))
        write_runs_csv(out, [r for k, r in rows.items() if k not in run_ids], columns)


def merge_shards(submission: Submission, outcomes: Sequence[TaskOutcome], force: bool = False) -> MergeResult | None:
    """Merge the shard folders into OUT after every task ended (None when no folder has a runs.csv).

    Every OUT/shards/* folder is merged (earlier submissions' included); with `force`, only this
    submission's, and the runs they finished replace OUT's own rows."""
    out = submission.out
    if force:
        _forget(out, {r for o in outcomes if o.summary for r in o.summary.finished})
        candidates = submission.folders()
    else:
        candidates = sorted(p for p in (out / "shards").glob("*") if p.is_dir())
    folders = [p for p in candidates if (p / "runs.csv").is_file()]
    return merge_outputs(folders, out) if folders else None
