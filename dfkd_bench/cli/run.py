"""`dfkd-bench run`: parse, call `runner.run`, print progress, one line per run and the comparison table."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..options import RunConfig
from ..errors import UserError
from .common import INVOCATION, class_count, cli, console, load_plugins, maybe_download, split_values, without_nproc
from .options import chosen_options, option_flags


class RunPrinter:
    """Progress bar over each run's rounds and a one-line summary per run (silent with --quiet)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 transient=True, disable=quiet)
        self.task: Any = None
        self.started = False

    def __enter__(self) -> "RunPrinter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.started:
            self.progress.stop()

    def callbacks(self) -> dict[str, Any]:
        """The hooks `run_many` calls."""
        return {"on_round": self.round, "on_start": self.start, "on_done": self.done, "log": self.log}

    def log(self, message: str) -> None:
        if not self.quiet:
            console.print(message)

    def start(self, res: Any) -> None:
        if not self.started:
            self.progress.start()
            self.started = True
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(res.run_id, total=None, info="")

    def round(self, res: Any, r: int, n: int, state: Any) -> None:
        last = state.curve[-1] if state.curve else None
        info = f"acc {last.student_acc:.2f}%" if last else "warm-up"
        self.progress.update(self.task, completed=r, total=n, info=info)

    def done(self, res: Any, row: dict[str, Any], cached: bool) -> None:
        if self.quiet:
            return
        tag = "cached" if cached else row.get("status")
        acc = row.get("student_acc") or "-"
        rounds = f" in {row['rounds']} rounds" if row.get("rounds") not in (None, "") else ""
        budget = f" budget={row['time_budget']}s ({row.get('n_synthetic')} images{rounds})" if row.get("time_budget") else ""
        self.progress.console.print(
            f"{row['method']:<14} {row['dataset']} ratio={row['ratio']} res={row['resolution']}{budget} seed={row['seed']}: "
            f"student {acc}% (teacher {row.get('teacher_acc')}%) synth {row.get('synth_s') or '-'}s "
            f"kd {row.get('kd_s') or '-'}s total {row.get('total_s') or '-'}s [{tag}]"
            + (f" {row.get('error')}" if row.get("error") else ""), markup=False)


def print_table(rows: list[dict[str, Any]]) -> None:
    from ..report import runs_frame
    from ..report.tables import marked_summary

    df = runs_frame(rows)
    summary, footnotes = marked_summary(df, class_count)
    table = Table(title="comparison (mean over seeds; seconds are wall-clock per phase)")
    budgeted = bool(summary["time_budget"].astype(bool).any()) if len(summary) else False
    for col in ["method", "ratio", "res", *(["budget s"] if budgeted else []), "seeds", "teacher acc", "student acc",
                "±", "synth s", "kd s", "total s", "images"]:
        table.add_column(col, justify="left" if col == "method" else "right")
    for r in summary.itertuples(index=False):
        table.add_row(r.method, f"{r.ratio:g}", str(r.resolution), *([r.time_budget or "—"] if budgeted else []),
                      str(r.seeds), f"{r.teacher_acc:.2f}", r.student_acc, r.student_acc_std, f"{r.synth_s:.1f}",
                      f"{r.kd_s:.1f}", f"{r.total_s:.1f}", f"{r.images:.0f}")
    console.print(table)
    for line in footnotes:
        console.print(line, markup=False)
    bad = df[df["status"] != "ok"]
    for r in bad.itertuples(index=False):
        console.print(f"{r.run_id}: {r.status} {getattr(r, 'error', '')}", markup=False)


@cli.command("run")
@click.option("--methods", "methods", required=True, help="Comma-separated methods, e.g. muse,nayer.")
@option_flags()
@click.option("--pair", "pairs", multiple=True, help="TEACHER:STUDENT pair to sweep (repeatable).")
@click.option("--download", is_flag=True, help="Fetch CIFAR with torchvision's downloader first (needs a network).")
@click.option("--set", "sets", multiple=True, help="METHOD.PARAM=VALUE hyper-parameter override (repeatable).")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file that registers methods.")
@click.option("--out", "out_dir", default="results", show_default=True, type=click.Path())
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes to run each run data-parallel over (torchrun; one GPU each, or gloo on the CPU).")
@click.option("--log", "trackers", default=None,
              help="Live tracking: tensorboard and/or wandb (comma-separated; extras of the same names).")
@click.option("--dry-run", is_flag=True, help="Print each run's schedule (rounds, images, KD steps, resets); run nothing.")
@click.option("--format", "output_format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="With --dry-run: json prints each run's whole plan (schedule, student recipe, generator size).")
@click.option("--force", is_flag=True, help="Redo runs that are already finished.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def run_cmd(methods: str, pairs: tuple[str, ...], download: bool, sets: tuple[str, ...], plugins: tuple[str, ...],
            out_dir: str, nproc: int, trackers: str | None, dry_run: bool, output_format: str, force: bool,
            quiet: bool, **flags: Any) -> None:
    """Run methods on the same teacher and budget; write runs.csv and runs/<run_id>/; print a table."""
    from .. import distributed
    from ..resolve import bank_bytes
    from ..runner import run_options

    if output_format == "json" and not dry_run:
        raise UserError("--format json prints the plans of a --dry-run; add --dry-run")

    validating_group = nproc > 1 and not distributed.launched_by_torchrun()
    launching = validating_group and not dry_run
    quiet = quiet or not distributed.current_rank_is_main()

    load_plugins(plugins)
    chosen = chosen_options(flags)
    maybe_download(chosen.values.get("dataset", "digits"), chosen.values.get("data_root"), download)
    if chosen.values.get("smoke") and not quiet:
        console.print("smoke run: a handful of steps per phase on a tiny budget; its rows are marked smoke=1 "
                      "and left out of reports")
    pair_list: list[tuple[str, str]] = []
    for p in pairs:
        t, sep, s = p.partition(":")
        if not sep or not t or not s:
            raise UserError(f"--pair {p!r} is malformed; expected TEACHER:STUDENT")
        pair_list.append((t, s))
    dry_run = dry_run or validating_group  # validate as each rank will, before starting any process
    printer = RunPrinter(quiet or launching)
    with printer:
        rows = run_options(methods, chosen, pairs=pair_list, sets=sets, out=out_dir, dry_run=dry_run, force=force,
                           trackers=split_values(trackers, str, "--log"),
                           world_size=nproc if validating_group else None, **printer.callbacks())
    if launching:
        sys.exit(distributed.launch(nproc, without_nproc(INVOCATION)))
    distributed.shutdown()
    if not distributed.current_rank_is_main():
        return
    if dry_run and output_format == "json":
        from ..plan import run_plan

        click.echo(json.dumps([run_plan(res) for res in rows], indent=1))
        return
    if dry_run:
        from ..cost.predict import predict_runs, summary_line

        predictions = predict_runs(rows)
        for res, prediction in zip(rows, predictions):
            console.print(f"{res.run_id}: {res.method_cls.name} {res.spec.name} ratio={res.config.ratio:g} "
                          f"{res.resolution_label}px {res.teacher}->{res.student}", markup=False)
            bank = (f"bank about {bank_bytes(res.n_synthetic, res.spec.in_chans, res.resolutions) / 2**30:.2f} GiB uint8"
                    if res.schedule.source == "bank" else f"online: no bank, {res.schedule.budget} budget")
            console.print(f"  {res.schedule.describe()}; {bank}", markup=False)
            console.print(f"  {prediction.line()}", markup=False)
        console.print(summary_line(predictions), markup=False)
        return
    print_table(rows)
    console.print(f"results: {Path(out_dir) / 'runs.csv'}")


def run_configs(configs: list[RunConfig], out_dir: str, force: bool, quiet: bool, trackers: list[str]) -> None:
    """Run configurations with progress, then print the comparison table."""
    from ..runner import run_many

    printer = RunPrinter(quiet)
    with printer:
        rows = run_many(configs, out_dir, force=force, trackers=trackers, **printer.callbacks())
    print_table(rows)
    console.print(f"results: {Path(out_dir) / 'runs.csv'}")
