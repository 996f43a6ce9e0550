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
from .common import (INVOCATION, class_count, cli, console, data_options, load_plugins, maybe_download,
                     split_values, without_nproc)


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
@click.option("--dataset", default="digits", show_default=True)
@click.option("--ratio", default="0.1", show_default=True, help="Synthetic images / real train size; a list sweeps.")
@click.option("--teacher", default=None, help="Teacher architecture (default: the dataset's).")
@click.option("--student", default=None, help="Student architecture (default: the dataset's).")
@click.option("--pair", "pairs", multiple=True, help="TEACHER:STUDENT pair to sweep (repeatable).")
@click.option("--teacher-checkpoint", default=None, help="Teacher weights to use instead of the cache.")
@click.option("--sweep-resolutions", "--resolution", "resolution", default=None,
              help="Generation resolution N; a list makes one run per resolution (old spelling: --resolution).")
@click.option("--multi-resolution", "--resolutions", "resolutions", default=None,
              help="ONE run generating at several resolutions, e.g. 16,32 (MUSE; old spelling: --resolutions).")
@click.option("--seed", default="0", show_default=True, help="Seed (a list sweeps).")
@click.option("--out", "out_dir", default="results", show_default=True, type=click.Path())
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@data_options
@click.option("--teacher-weights", default=None, help="torchvision weight set for a tv_* teacher, e.g. IMAGENET1K_V1.")
@click.option("--label-embeddings", default=None, help="Label-embedding file (.npz) instead of the shipped one.")
@click.option("--set", "sets", multiple=True, help="METHOD.PARAM=VALUE hyper-parameter override (repeatable).")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file that registers methods.")
@click.option("--smoke", is_flag=True, help="A handful of steps per phase on a tiny budget: check a setup end to end.")
@click.option("--protocol", default="equal", show_default=True, type=click.Choice(["equal", "paper"]),
              help="equal: same student steps per image for every method; paper: each reference's own schedule.")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(["auto", "bf16", "off"]),
              help="bf16 autocast of the forwards: auto (on CUDA only), bf16 (on the CPU too), off (fp32, as the "
                   "reference code runs).")
@click.option("--compile", "compile_models", is_flag=True,
              help="torch.compile teacher, student and generator (eager, with a one-line note, where it fails).")
@click.option("--bank-gpu-gb", default=None, type=float,
              help="GiB the uint8 bank may take on the GPU; past it the bank moves to host memory "
                   "(default: half the GPU).")
@click.option("--auto-batch", is_flag=True,
              help="After running out of memory, retry at half the batch sizes (same images seen), down to a floor.")
@click.option("--time-budget", default=None,
              help="Seconds of synthesis + KD per run (a list sweeps); --ratio then caps the images.")
@click.option("--nproc", default=1, show_default=True, type=click.IntRange(min=1),
              help="Processes to run each run data-parallel over (torchrun; one GPU each, or gloo on the CPU).")
@click.option("--log", "trackers", default=None,
              help="Live tracking: tensorboard and/or wandb (comma-separated; extras of the same names).")
@click.option("--dry-run", is_flag=True, help="Print each run's schedule (rounds, images, KD steps, resets); run nothing.")
@click.option("--format", "output_format", default="text", show_default=True, type=click.Choice(["text", "json"]),
              help="With --dry-run: json prints each run's whole plan (schedule, student recipe, generator size).")
@click.option("--force", is_flag=True, help="Redo runs that are already finished.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def run_cmd(methods: str, dataset: str, ratio: str, teacher: str | None, student: str | None,
            pairs: tuple[str, ...], teacher_checkpoint: str | None, resolution: str | None,
            resolutions: str | None, seed: str, out_dir: str, device: str, data_root: str | None,
            classes: str | None, download: bool, teacher_weights: str | None, label_embeddings: str | None,
            sets: tuple[str, ...], plugins: tuple[str, ...], smoke: bool, protocol: str, amp: str,
            compile_models: bool, bank_gpu_gb: float | None, auto_batch: bool,
            time_budget: str | None, nproc: int, trackers: str | None, dry_run: bool, output_format: str,
            force: bool, quiet: bool) -> None:
    """Run methods on the same teacher and budget; write runs.csv and runs/<run_id>/; print a table."""
    from .. import distributed
    from ..resolve import bank_bytes
    from ..runner import run

    if output_format == "json" and not dry_run:
        raise UserError("--format json prints the plans of a --dry-run; add --dry-run")

    validating_group = nproc > 1 and not distributed.launched_by_torchrun()
    launching = validating_group and not dry_run
    quiet = quiet or not distributed.current_rank_is_main()

    load_plugins(plugins)
    maybe_download(dataset, data_root, download)
    if smoke and not quiet:
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
        rows = run(methods, dataset=dataset, ratio=split_values(ratio, float, "--ratio"),
                   seed=split_values(seed, int, "--seed"), resolution=split_values(resolution, int, "--sweep-resolutions"),
                   resolutions=split_values(resolutions, int, "--multi-resolution"), teacher=teacher, student=student,
                   pairs=pair_list, sets=sets, out=out_dir, device=device, data_root=data_root,
                   teacher_checkpoint=teacher_checkpoint, teacher_weights=teacher_weights,
                   label_embeddings=label_embeddings, classes=classes, smoke=smoke, protocol=protocol,
                   amp=amp, compile=compile_models, bank_gpu_gb=bank_gpu_gb, auto_batch=auto_batch,
                   time_budget=split_values(time_budget, float, "--time-budget"), dry_run=dry_run, force=force,
                   trackers=split_values(trackers, str, "--log"), world_size=nproc if validating_group else None,
                   **printer.callbacks())
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
        for res in rows:
            console.print(f"{res.run_id}: {res.method_cls.name} {res.spec.name} ratio={res.config.ratio:g} "
                          f"{res.resolution_label}px {res.teacher}->{res.student}", markup=False)
            bank = (f"bank about {bank_bytes(res.n_synthetic, res.spec.in_chans, res.resolutions) / 2**30:.2f} GiB uint8"
                    if res.schedule.source == "bank" else f"online: no bank, {res.schedule.budget} budget")
            console.print(f"  {res.schedule.describe()}; {bank}", markup=False)
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
