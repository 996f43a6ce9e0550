"""`dfkd-bench sweep`: a sweep file run here, planned (--dry-run) or submitted through submitit."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..options import RunConfig
from ..errors import UserError
from .common import cli, console, load_plugins, split_values
from .options import MACHINE, machine_values, option_flags
from .run import run_configs


@cli.command("sweep")
@click.argument("sweep_file", type=click.Path())
@click.option("--out", "out_dir", default="results", show_default=True, type=click.Path())
@click.option("--shard", default=None, help="i/n: run only the i-th of n disjoint parts (job arrays).")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file that registers methods.")
@click.option("--dry-run", is_flag=True, help="List every run with its id, status and estimated cost; run nothing.")
@click.option("--force", is_flag=True, help="Redo runs that are already finished.")
@click.option("--quiet", is_flag=True, help="No progress output.")
@click.option("--launcher", default="local", show_default=True, type=click.Choice(["local", "submitit"]),
              help="local: run here; submitit: a SLURM job array, one shard per task (the spec's [launcher] table).")
@click.option("--wait", is_flag=True, help="With --launcher submitit: wait for every task, then merge into --out.")
@click.option("--log", "trackers", default=None, help="Live tracking of each run here: tensorboard and/or wandb.")
@option_flags(MACHINE)
def sweep_cmd(sweep_file: str, out_dir: str, shard: str | None, plugins: tuple[str, ...], dry_run: bool,
              force: bool, quiet: bool, launcher: str, wait: bool, trackers: str | None, **flags: Any) -> None:
    """Run the grid of a TOML sweep file, or of a shipped grid by name (`dfkd-bench sweeps`); finished runs
    are skipped. The machine flags (--device, --data-root, --amp, ...) override the file's."""
    from ..sweep import load_sweep, parse_shard
    from ..sweep import shard as take_shard

    load_plugins(plugins)
    machine = machine_values(flags)
    if launcher == "submitit" and trackers:
        raise UserError("--log goes with --launcher local (or with `sweep --shard i/n` inside your own job script)")
    if launcher == "submitit":
        _sweep_submitit(sweep_file, out_dir, shard, plugins, dry_run, force, wait, machine)
        return
    if wait:
        raise UserError("--wait goes with --launcher submitit; a --launcher local sweep always runs to the end")
    index, count = parse_shard(shard)
    configs = take_shard(load_sweep(sweep_file, machine), index, count)
    if dry_run:
        print_plan(configs, out_dir)
        return
    run_configs(configs, out_dir, force, quiet, split_values(trackers, str, "--log"))


def _sweep_submitit(sweep_file: str, out_dir: str, shard: str | None, plugins: tuple[str, ...], dry_run: bool,
                    force: bool, wait: bool, machine: dict[str, Any]) -> None:
    """`sweep --launcher submitit`: submit the grid as a job array and say how to merge it, or wait and merge."""
    from ..launcher import load_launcher, submit_sweep
    from ..sweep import load_sweep

    if shard:
        raise UserError("--shard goes with --launcher local; --launcher submitit makes the shards itself "
                        "(set how many with [launcher] tasks)")
    settings = load_launcher(sweep_file)
    if dry_run:
        configs = load_sweep(sweep_file, machine)
        print_plan(configs, out_dir)
        console.print(settings.describe(len(configs)), markup=False)
        return
    wait = wait or settings.cluster == "debug"  # the debug executor runs tasks only when waited for
    if force and not wait:
        raise UserError("--force with --launcher submitit needs --wait, so that the merge replaces --out's "
                        "older results")
    root_plugins = click.get_current_context().find_root().params.get("plugins", ())
    submission = submit_sweep(sweep_file, out_dir, settings, (*root_plugins, *plugins), force, machine)
    for line in submission.lines():
        console.print(line, markup=False)
    if wait:
        _wait_and_merge(submission, force)


def _wait_and_merge(submission: Any, force: bool) -> None:
    """One line per task as it is collected, then the shard folders merged into --out; exit 1 when a task
    raised or the merge found conflicts (everything else is still merged)."""
    from ..launcher import merge_shards, wait_for

    outcomes = []
    for outcome in wait_for(submission):
        console.print(outcome.line(), markup=False)
        outcomes.append(outcome)
    merged = merge_shards(submission, outcomes, force)
    conflicts = merged.conflicts if merged else []
    for conflict in conflicts:
        click.echo(conflict.line(), err=True)
    console.print(merged.summary() if merged else "no shard folder holds a runs.csv; nothing merged", markup=False)
    if conflicts or any(o.error for o in outcomes):
        sys.exit(1)


def print_plan(configs: list[RunConfig], out_dir: str) -> None:
    """One line per run (id, status, images, estimated seconds from finished runs, predicted seconds from
    its counted work), then the totals and the predicted device-hours of the runs still to do."""
    from ..cost.predict import predict_runs, summary_line
    from ..grid import plan

    planned = plan(configs, out_dir)
    todo = [p for p in planned if p.status != "done"]
    predicted = dict(zip(map(id, todo), predict_runs([p.resolved for p in todo])))
    for p in planned:
        cost = f"~{p.estimate_s:.0f}s" if p.estimate_s is not None else ("-" if p.status == "done" else "no estimate")
        prediction = predicted.get(id(p))
        cost += f"  predicted {prediction.total_s:.0f}s" if prediction else ""
        console.print(f"{p.resolved.run_id}  {p.status:<7}  {p.resolved.n_synthetic} images  {cost}", markup=False)
    known = sum(p.estimate_s for p in todo if p.estimate_s is not None)
    console.print(f"{len(planned)} runs: {len(planned) - len(todo)} done, {len(todo)} to do or partial, "
                  f"{sum(p.resolved.n_synthetic for p in todo)} images to make; estimated {known:.0f}s for the "
                  f"{sum(p.estimate_s is not None for p in todo)} with finished runs to go by", markup=False)
    console.print(summary_line(list(predicted.values())), markup=False)
