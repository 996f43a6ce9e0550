"""Rank parity on 2 gloo processes: every module a method shares (`Method.shared_modules`, the student,
the generator) is bit-identical on every rank after every round, and a module that differs stops the run
as `failed`, naming the module and the round.

The two processes are forked here (torch.multiprocessing, a file rendezvous); each joins the group as
torchrun would describe it, so `runner.run` inside them runs data-parallel."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from dfkd_bench import distributed, execute, runner
from dfkd_bench.distributed import RankMismatch, RunningStatistics, align_shared_modules
from dfkd_bench.engine import DistillationRun

METHODS = ("fast", "nayer", "muse", "deepinversion", "cmi", "dafl", "dfq", "zskt", "dfad")
BANK = dict(synth_batch=8, kd_batch=16, kd_steps=4, final_kd_steps=0)
GENERATOR = dict(BANK, warmup_rounds=1, g_steps=3)
ONLINE = dict(BANK, kd_batch=8, round_steps=4, g_steps=1, s_steps=2)
# Three rounds of 8 images each at --ratio 0.0167 (24 digits images); NAYER re-initialises its generator
# at round 2 (g_life 2), so the broadcast of a re-drawn generator is covered.
TINY = {"fast": GENERATOR, "nayer": dict(GENERATOR, g_life=2), "muse": GENERATOR,
        "deepinversion": dict(BANK, iterations=4), "cmi": dict(GENERATOR, n_neg=16),
        **{name: ONLINE for name in ("dafl", "dfq", "zskt", "dfad")}}
RATIO = 0.0167


def sets(values: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{method}.{key}={value}" for method, kv in values.items() for key, value in kv.items()]


def spawn_two(worker: Callable[..., None], tmp_path: Path) -> dict[str, Any]:
    """Run `worker(rank, tmp_path)` on 2 gloo processes, forked (no re-import: seconds, not tens of
    seconds on a loaded machine); returns what rank 0 wrote to results.json."""
    mp.start_processes(_joined, args=(worker, tmp_path), nprocs=2, join=True, start_method="fork")
    return json.loads((tmp_path / "results.json").read_text())


def _joined(rank: int, worker: Callable[..., None], tmp_path: Path) -> None:
    """Join the 2-process group as torchrun describes it (WORLD_SIZE, RANK), run the worker, leave."""
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=rank, world_size=2)
    try:
        worker(rank, tmp_path)
    finally:
        dist.destroy_process_group()


def _write_results(rank: int, tmp_path: Path, results: dict[str, Any]) -> None:
    if rank == 0:
        (tmp_path / "results.json").write_text(json.dumps(results))


def _collectives_and_check(rank: int, tmp_path: Path) -> None:
    """The collectives on hand-made modules, then a run whose generator rank 1 nudges after round 2."""
    group = distributed.current()
    results: dict[str, Any] = {}
    floats, doubles = torch.full((3,), float(rank)), torch.full((2, 2), 2.0 * rank, dtype=torch.float64)
    group.average_([floats, None, doubles])
    results["averaged"] = [floats.tolist(), doubles.flatten().tolist()]

    torch.manual_seed(rank)  # each rank draws its own module; the broadcast makes every rank's rank 0's
    drawn = nn.Linear(3, 2)
    group.broadcast_module_(drawn)
    results["broadcast_equal"] = _equal_everywhere(group, drawn.state_dict())

    torch.manual_seed(0)
    generator = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    student = nn.Linear(4, 2)
    generator[1].running_mean.fill_(float(rank))  # moved by each rank's own batches: averaged, then equal
    momentum = RunningStatistics([torch.full((2,), 4.0 * rank)])
    modules = {"student": student, "generator": generator, "bn_momentum": momentum}
    align_shared_modules(group, modules, "round 1")
    results["running_mean"] = generator[1].running_mean.tolist()
    results["momentum"] = momentum.get_buffer("0").tolist()
    if rank == 1:
        with torch.no_grad():
            generator[0].weight[0, 0] += 1e-6
    try:
        align_shared_modules(group, modules, "round 3")
        results["mismatch"] = ""
    except RankMismatch as exc:
        results["mismatch"] = str(exc)
    results["rows"] = _skewed_run(tmp_path)
    _write_results(rank, tmp_path, results)


def _skewed_run(tmp_path: Path) -> list[dict[str, str]]:
    """A tiny Fast run list through the runner: "skewed" is Fast with rank 1's generator nudged after its
    second synthesis round, then plain Fast (the group goes on after a failed run)."""
    from dfkd_bench.methods.fast import Fast
    from dfkd_bench.plugins import register_method

    @register_method("skewed", "Fast whose generator differs on rank 1 after round 2")
    class Skewed(Fast):
        def end_synthesis(self) -> None:
            super().end_synthesis()
            if self.round.index == 1 and self.ctx.group.rank == 1:
                with torch.no_grad():
                    next(self.generator.parameters()).view(-1)[0] += 1e-6

    quick = dict(GENERATOR, g_steps=1, kd_steps=1)
    values = {"skewed": quick, "fast": quick}
    rows = runner.run(list(values), ratio=RATIO, device="cpu", out=tmp_path / "runs", sets=sets(values))
    return [{key: str(row.get(key)) for key in ("method", "status", "error")} for row in rows]  # rank 0's hold all


def _equal_everywhere(group: distributed.Group, state: dict[str, torch.Tensor]) -> bool:
    gathered = group.gather_objects({k: v.detach().clone() for k, v in state.items()})
    return all(torch.equal(gathered[0][k], other[k]) for other in gathered[1:] for k in state)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, digits_teacher) -> dict[str, Any]:
    return spawn_two(_collectives_and_check, tmp_path_factory.mktemp("two_ranks"))


def test_collectives_average_broadcast_and_align_the_shared_state(two_ranks: dict[str, Any]) -> None:
    assert two_ranks["averaged"] == [[0.5] * 3, [1.0] * 4]  # one flat all-reduce per dtype, None skipped
    assert two_ranks["broadcast_equal"]
    assert two_ranks["running_mean"] == [0.5] * 4 and two_ranks["momentum"] == [2.0, 2.0]


def test_a_module_that_differs_between_ranks_is_named_with_its_round(two_ranks: dict[str, Any]) -> None:
    message = two_ranks["mismatch"]
    assert message.startswith("after round 3 these shared modules differ between the 2 ranks: generator (")


def test_a_rank_mismatch_fails_the_run_naming_module_and_round(two_ranks: dict[str, Any]) -> None:
    skewed, fast = two_ranks["rows"]
    assert skewed["status"] == "failed"
    assert skewed["error"].startswith("RankMismatch: after round 2 these shared modules differ between the 2 "
                                      "ranks: generator (")
    assert fast["status"] == "ok"  # both ranks ended the failed run alike and went on together


class RecordingRun(DistillationRun):
    """A DistillationRun that, after each round, gathers every shared module (and the generator, whether
    declared or not) from both ranks and records which tensors differ; rank 0 keeps the record."""

    records: dict[str, list[dict[str, Any]]] = {}

    def __init__(self, method: Any, ctx: Any, *args: Any, on_round: Any = None, **kwargs: Any) -> None:
        def record(r: int, n: int, state: Any) -> None:
            self.record_round(r)
            if on_round:
                on_round(r, n, state)

        super().__init__(method, ctx, *args, on_round=record, **kwargs)

    def record_round(self, r: int) -> None:
        modules = dict(self.method.shared_modules())
        if isinstance(getattr(self.method, "generator", None), nn.Module):
            modules.setdefault("generator", self.method.generator)
        states = {name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in modules.items()}
        gathered = self.group.gather_objects(states)
        differ = [f"{name}.{k}" for name, state in states.items() for k in state
                  if not torch.equal(gathered[0][name][k], gathered[1][name][k])]
        self.records.setdefault(self.method.name, []).append({"round": r, "modules": sorted(modules),
                                                              "differ": differ})


def _nine_methods(rank: int, tmp_path: Path) -> None:
    execute.DistillationRun = RecordingRun  # in this forked process only
    rows = runner.run(list(TINY), ratio=RATIO, device="cpu", out=tmp_path / "runs", sets=sets(TINY))
    _write_results(rank, tmp_path, {"rows": [[row["method"], row.get("status"), row.get("error")] for row in rows],
                                    "records": RecordingRun.records})


@pytest.mark.slow
def test_every_method_keeps_its_shared_modules_identical_on_every_rank(tmp_path: Path, digits_teacher) -> None:
    """All nine methods, 3 rounds each on 2 processes (about a minute on 2 CPU cores)."""
    results = spawn_two(_nine_methods, tmp_path)
    assert [row[:2] for row in results["rows"]] == [[m, "ok"] for m in METHODS], results["rows"]
    records = results["records"]
    for method in METHODS:
        assert [r["round"] for r in records[method]] == [1, 2, 3]
        assert all(r["differ"] == [] for r in records[method]), (method, records[method])
    assert {"student", "generator"} <= set(records["fast"][-1]["modules"]) and records["deepinversion"][0]["modules"] == ["student"]
    assert {"head"} <= set(records["cmi"][0]["modules"]) and {"projection", "bn_momentum"} <= set(records["muse"][0]["modules"])
