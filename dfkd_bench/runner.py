"""The thin orchestrator of `dfkd-bench run`: a grid resolved, its finished runs read back, the rest run
with their teacher and test split loaded once (`run_many`); `run` is its Python form."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import distributed
from .config import parse_set_options
from .options import GridOptions, RunConfig, from_keywords, keyword_help
from .data.split import EvalSplit
from .engine import Normalize
from .engine.evaluate import accuracy
from .execute import RoundHook, run_one
from .grid import check_out_dir, expand, method_names
from .outputs import FINISHED, read_runs
from .resolve import ResolvedRun, resolve_all
from .teachers import SMOKE_TEST_IMAGES, TeacherCard, get_teacher
from .tracking import check_trackers


def run_many(configs: Sequence[RunConfig], out_dir: str | Path = "results", force: bool = False,
             on_round: RoundHook | None = None, on_start: Callable[[ResolvedRun], None] | None = None,
             on_done: Callable[[ResolvedRun, dict[str, Any], bool], None] | None = None,
             log: Callable[[str], None] | None = None, trackers: Sequence[str] = (),
             world_size: int | None = None) -> list[dict[str, Any]]:
    """Validate every config first, then run each (finished runs are read back, not redone); `trackers`
    (tensorboard, wandb) mirror each run live. `world_size`: the processes each run is data-parallel
    over (default: torchrun's, from the environment)."""
    out_dir = Path(out_dir)
    trackers = check_trackers(trackers)
    resolved = resolve_all(configs, world_size=world_size)
    group = distributed.init_from_env(resolved[0].device.type) if resolved else distributed.SINGLE
    finished = read_runs(out_dir)
    rows: list[dict[str, Any]] = []
    teachers: dict[tuple, tuple[torch.nn.Module, TeacherCard]] = {}
    splits: dict[tuple, EvalSplit] = {}
    for res in resolved:
        prior = finished.get(res.run_id)
        if prior and prior.get("status") in FINISHED and not force:
            rows.append(prior)
            if on_done:
                on_done(res, prior, True)
            continue
        if force:
            (out_dir / "runs" / res.run_id / "checkpoint.pt").unlink(missing_ok=True)
        c = res.config
        split_key = (res.spec.name, c.data_root, c.smoke)
        if split_key not in splits:
            if log:
                log(f"reading the {res.spec.name} test split (cached as uint8 after the first time)")
            with group.main_first():  # rank 0 fills the uint8 cache, the others then read it
                splits[split_key] = res.source.test_split(limit=SMOKE_TEST_IMAGES if c.smoke else None)
        teacher_key = (res.spec.name, c.data_root, res.teacher, c.teacher_checkpoint, c.teacher_weights,
                       res.device.type, c.smoke)
        if teacher_key not in teachers:
            with group.main_first():  # rank 0 trains or downloads the teacher into the cache once
                teachers[teacher_key] = get_teacher(res.spec, res.teacher, res.source, res.device,
                                                    checkpoint=c.teacher_checkpoint, weights=c.teacher_weights,
                                                    smoke=c.smoke, log=log)
        teacher, card = teachers[teacher_key]
        if card.test_acc is None:
            card = replace(card, test_acc=accuracy(teacher, splits[split_key], Normalize(res.spec.mean, res.spec.std)
                                                   .to(res.device)), test_images=len(splits[split_key]))
            teachers[teacher_key] = (teacher, card)
        if on_start:
            on_start(res)
        row = run_one(res, out_dir, teacher, card, splits[split_key], on_round, trackers)
        rows.append(row)
        if on_done:
            on_done(res, row, False)
    return rows


def run(methods: Sequence[str] | str, *, pairs: Sequence[tuple[str, str]] = (), sets: Sequence[str] = (),
        out: str | Path = "results", dry_run: bool = False, force: bool = False, trackers: Sequence[str] = (),
        world_size: int | None = None, on_round: RoundHook | None = None,
        on_start: Callable[[ResolvedRun], None] | None = None,
        on_done: Callable[[ResolvedRun, dict[str, Any], bool], None] | None = None,
        log: Callable[[str], None] | None = None, **options: Any) -> list[Any]:
    """The Python form of `dfkd-bench run`: every method on the same teacher and budget; returns runs.csv rows.

    `options` are the run options (below); a list sweeps where the option does (ratio, seed, resolution,
    time_budget, multi_resolution as a list of sets). `pairs` sweeps (teacher, student) pairs; `sets` are
    "METHOD.PARAM=VALUE" strings; `on_round`, `on_start`, `on_done` and `log` are progress hooks;
    `trackers` names live loggers (tensorboard, wandb); `world_size` the processes each run is
    data-parallel over (default: torchrun's). With `dry_run` nothing runs: the resolved runs come back
    (each with its `schedule`), no teacher, data or device work needed.
    """
    return run_options(methods, from_keywords(options), pairs=pairs, sets=sets, out=out, dry_run=dry_run, force=force,
                       trackers=trackers, world_size=world_size, on_round=on_round, on_start=on_start,
                       on_done=on_done, log=log)


def run_options(methods: Sequence[str] | str, chosen: GridOptions, *, pairs: Sequence[tuple[str, str]] = (),
                sets: Sequence[str] = (), out: str | Path = "results", dry_run: bool = False, force: bool = False,
                trackers: Sequence[str] = (), world_size: int | None = None, **callbacks: Any) -> list[Any]:
    """`run` with its options already parsed (the command line parses its flags into `chosen` itself)."""
    names = method_names(methods)
    check_out_dir(out)
    configs = expand(names, chosen.base(names[0]), chosen.axes, pairs=list(pairs) or [(None, None)],
                     overrides=parse_set_options(list(sets), names))
    if dry_run:
        return resolve_all(configs, need_data=False, world_size=world_size)
    return run_many(configs, out, force=force, trackers=trackers, world_size=world_size, **callbacks)


run.__doc__ = f"{run.__doc__}\n    Options:\n\n{keyword_help()}"
