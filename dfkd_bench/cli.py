"""The `dfkd-bench` command line: parses, calls the library, prints. Bad input exits 2 with one line."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .config import RunConfig
from .data import DATASETS
from .errors import UserError
from .models import MODELS, model_info, parameter_count
from .plugins import METHODS, load_plugin

console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def _split(value: str | None, kind: type, name: str) -> list[Any]:
    if value is None:
        return []
    try:
        return [kind(v.strip()) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} {value!r}: expected comma-separated {kind.__name__} values") from None


def _load_plugins(plugins: tuple[str, ...]) -> None:
    for path in plugins:
        load_plugin(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfkd-bench")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file that registers methods.")
def cli(plugins: tuple[str, ...]) -> None:
    """Benchmark data-free knowledge distillation methods on equal budgets."""
    _load_plugins(plugins)


def _listing(entries: list[Any]) -> None:
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        click.echo(f"{e.name:<{width}}  {e.description}")


@cli.command("methods")
def methods_cmd() -> None:
    """List the registered DFKD methods."""
    _listing(METHODS.entries())


@cli.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets."""
    _listing(DATASETS.entries())


@cli.command("models")
def models_cmd() -> None:
    """List the model zoo: parameters at 10 classes, the input size each is meant for, family, description."""
    infos = [model_info(name) for name in MODELS.names()]
    params = [f"{parameter_count(i.name, 10) / 1e6:.2f}M" for i in infos]
    width = max([len("name")] + [len(i.name) for i in infos])
    click.echo(f"{'name':<{width}}  {'params':>7}  {'input':>5}  {'family':<8}  description")
    for info, count in zip(infos, params):
        click.echo(f"{info.name:<{width}}  {count:>7}  {info.input_size:>5}  {info.family:<8}  {info.description}")


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


def _print_table(rows: list[dict[str, Any]]) -> None:
    from .report import runs_frame
    from .report.tables import marked_summary

    df = runs_frame(rows)
    summary, footnotes = marked_summary(df, _class_count)
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


def _class_count(dataset: str) -> int | None:
    """A dataset's number of classes by name, for runs.csv files that did not record num_classes (None if unknown)."""
    try:
        return DATASETS.get(dataset).num_classes
    except UserError:
        return None


def data_options(command: Any) -> Any:
    """--data-root, --classes and --download, shared by every command that reads a dataset."""
    command = click.option("--download", is_flag=True,
                           help="Fetch CIFAR with torchvision's downloader first (needs a network).")(command)
    command = click.option("--classes", default=None, type=click.Path(),
                           help="File of ImageNet wnids (one a line): use that class subset.")(command)
    return click.option("--data-root", default=None,
                        help="Folder with the dataset's files (default $DFKD_BENCH_DATA; digits needs none).")(command)


def _maybe_download(dataset: str, data_root: str | None, download: bool) -> None:
    if not download:
        return
    from .data.cifar import TORCHVISION_CLASSES, download_cifar
    from .data.spec import DATA_ENV

    spec = DATASETS.get(dataset)
    if spec.name not in TORCHVISION_CLASSES:
        raise UserError(f"--download fetches {', '.join(TORCHVISION_CLASSES)}; {spec.name} must be copied "
                        f"to --data-root by hand")
    root = data_root or os.environ.get(DATA_ENV)
    if not root:
        raise UserError(f"--download needs --data-root DIR (or ${DATA_ENV}) to download into")
    Path(root).mkdir(parents=True, exist_ok=True)
    download_cifar(spec, root)


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
    from . import distributed
    from .runner import bank_bytes, run

    if output_format == "json" and not dry_run:
        raise UserError("--format json prints the plans of a --dry-run; add --dry-run")

    validating_group = nproc > 1 and not distributed.launched_by_torchrun()
    launching = validating_group and not dry_run
    quiet = quiet or not distributed.current_rank_is_main()

    _load_plugins(plugins)
    _maybe_download(dataset, data_root, download)
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
    with distributed.sized_as(nproc if validating_group else None), printer:
        rows = run(methods, dataset=dataset, ratio=_split(ratio, float, "--ratio"),
                   seed=_split(seed, int, "--seed"), resolution=_split(resolution, int, "--sweep-resolutions"),
                   resolutions=_split(resolutions, int, "--multi-resolution"), teacher=teacher, student=student,
                   pairs=pair_list, sets=sets, out=out_dir, device=device, data_root=data_root,
                   teacher_checkpoint=teacher_checkpoint, teacher_weights=teacher_weights,
                   label_embeddings=label_embeddings, classes=classes, smoke=smoke, protocol=protocol,
                   amp=amp, compile=compile_models, bank_gpu_gb=bank_gpu_gb, auto_batch=auto_batch,
                   time_budget=_split(time_budget, float, "--time-budget"), dry_run=dry_run, force=force,
                   trackers=_split(trackers, str, "--log"), **printer.callbacks())
    if launching:
        sys.exit(distributed.launch(nproc, _without_nproc(INVOCATION)))
    distributed.shutdown()
    if not distributed.current_rank_is_main():
        return
    if dry_run and output_format == "json":
        from .plan import run_plan

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
    _print_table(rows)
    console.print(f"results: {Path(out_dir) / 'runs.csv'}")


def _run_configs(configs: list[RunConfig], out_dir: str, force: bool, quiet: bool, trackers: list[str]) -> None:
    """Run configurations with progress, then print the comparison table."""
    from .runner import run_many

    printer = RunPrinter(quiet)
    with printer:
        rows = run_many(configs, out_dir, force=force, trackers=trackers, **printer.callbacks())
    _print_table(rows)
    console.print(f"results: {Path(out_dir) / 'runs.csv'}")


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
def sweep_cmd(sweep_file: str, out_dir: str, shard: str | None, plugins: tuple[str, ...], dry_run: bool,
              force: bool, quiet: bool, launcher: str, wait: bool, trackers: str | None) -> None:
    """Run the grid of a TOML sweep file (see configs/); finished runs are skipped."""
    from .sweep import load_sweep, parse_shard
    from .sweep import shard as take_shard

    _load_plugins(plugins)
    if launcher == "submitit" and trackers:
        raise UserError("--log goes with --launcher local (or with `sweep --shard i/n` inside your own job script)")
    if launcher == "submitit":
        _sweep_submitit(sweep_file, out_dir, shard, plugins, dry_run, force, wait)
        return
    if wait:
        raise UserError("--wait goes with --launcher submitit; a --launcher local sweep always runs to the end")
    index, count = parse_shard(shard)
    configs = take_shard(load_sweep(sweep_file), index, count)
    if dry_run:
        _print_plan(configs, out_dir)
        return
    _run_configs(configs, out_dir, force, quiet, _split(trackers, str, "--log"))


def _sweep_submitit(sweep_file: str, out_dir: str, shard: str | None, plugins: tuple[str, ...], dry_run: bool,
                    force: bool, wait: bool) -> None:
    """`sweep --launcher submitit`: submit the grid as a job array and say how to merge it, or wait and merge."""
    from .launcher import load_launcher, submit_sweep
    from .sweep import load_sweep

    if shard:
        raise UserError("--shard goes with --launcher local; --launcher submitit makes the shards itself "
                        "(set how many with [launcher] tasks)")
    settings = load_launcher(sweep_file)
    if dry_run:
        configs = load_sweep(sweep_file)
        _print_plan(configs, out_dir)
        console.print(settings.describe(len(configs)), markup=False)
        return
    wait = wait or settings.cluster == "debug"  # the debug executor runs tasks only when waited for
    if force and not wait:
        raise UserError("--force with --launcher submitit needs --wait, so that the merge replaces --out's "
                        "older results")
    root_plugins = click.get_current_context().find_root().params.get("plugins", ())
    submission = submit_sweep(sweep_file, out_dir, settings, (*root_plugins, *plugins), force)
    for line in submission.lines():
        console.print(line, markup=False)
    if wait:
        _wait_and_merge(submission, force)


def _wait_and_merge(submission: Any, force: bool) -> None:
    """One line per task as it is collected, then the shard folders merged into --out; exit 1 when a task
    raised or the merge found conflicts (everything else is still merged)."""
    from .launcher import merge_shards, wait_for

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


def _print_plan(configs: list[RunConfig], out_dir: str) -> None:
    """One line per run (id, status, images, estimated seconds), then the totals."""
    from .runner import plan

    planned = plan(configs, out_dir)
    for p in planned:
        cost = f"~{p.estimate_s:.0f}s" if p.estimate_s is not None else ("-" if p.status == "done" else "no estimate")
        console.print(f"{p.resolved.run_id}  {p.status:<7}  {p.resolved.n_synthetic} images  {cost}", markup=False)
    todo = [p for p in planned if p.status != "done"]
    known = sum(p.estimate_s for p in todo if p.estimate_s is not None)
    console.print(f"{len(planned)} runs: {len(planned) - len(todo)} done, {len(todo)} to do or partial, "
                  f"{sum(p.resolved.n_synthetic for p in todo)} images to make; estimated {known:.0f}s for the "
                  f"{sum(p.estimate_s is not None for p in todo)} with finished runs to go by", markup=False)


def _deprecated(old: str, new: str) -> None:
    """One `note:` line on stderr for an old spelling that still works for one release."""
    click.echo(f"note: `{old}` is deprecated and will be removed; use `{new}`", err=True)


@cli.command("report")
@click.option("--results", "results_dir", default=None, type=click.Path(),
              help="Output folder holding runs.csv.  [default: results]")
@click.option("--out", "old_out", default=None, type=click.Path(), hidden=True,
              help="Deprecated spelling of --results.")
@click.option("--threshold", default=None, type=float, help="Add the seconds to first reach this accuracy (%).")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "csv", "latex"]))
def report_cmd(results_dir: str | None, old_out: str | None, threshold: float | None, fmt: str) -> None:
    """Summarise runs.csv over seeds (mean and std of accuracy, seconds per phase)."""
    from .report import read_runs_csv
    from .report.tables import add_time_to_accuracy, marked_summary, render_summary, require_runs_csv

    if old_out is not None:
        if results_dir is not None:
            raise UserError("report takes --results DIR; --out DIR is its deprecated spelling: give only --results")
    out_dir = results_dir or old_out or "results"
    require_runs_csv(out_dir)
    if old_out is not None:
        _deprecated("report --out DIR", "report --results DIR")
    df = read_runs_csv(out_dir)
    if threshold is not None:
        df = add_time_to_accuracy(df, out_dir, threshold)
    table, footnotes = marked_summary(df, _class_count)
    click.echo(render_summary(table, footnotes, fmt), nl=fmt != "csv")
    if fmt == "csv":
        for line in footnotes:
            click.echo(line, err=True)


@cli.group("teacher")
def teacher_group() -> None:
    """Train or inspect cached teachers."""


def _teacher_arguments(dataset: str, arch: str | None, classes: str | None, device: str) -> tuple[Any, str, Any]:
    """Dataset spec (with --classes), architecture and device: what the arguments decide before any data."""
    from .runner import dataset_spec, pick_device

    spec = dataset_spec(dataset, classes)
    arch = arch or spec.default_teacher
    MODELS.get(arch)
    return spec, arch, pick_device(device)


def _teacher_data(dataset: str, spec: Any, data_root: str | None, download: bool, need_data: bool) -> Any:
    """The data source (after --download), or None where the data is optional and absent."""
    _maybe_download(dataset, data_root, download)
    if need_data or data_root or os.environ.get("DFKD_BENCH_DATA") or not spec.needs_data_root:
        return spec.open(data_root)
    return None


def _print_card(card: Any) -> None:
    acc = f"{card.test_acc:.2f}% on {card.test_images} test images" if card.test_acc is not None else \
        "accuracy not measured (no --data-root)"
    restricted = f", restricted from {card.restricted_from} classes" if card.restricted_from else ""
    console.print(f"teacher {card.arch} for {card.dataset}: {acc}{restricted}{' [smoke]' if card.smoke else ''} "
                  f"-> {card.path} (sha256 {card.sha256[:12]})", markup=False)


@teacher_group.command("train")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--arch", default=None, help="Architecture (default: the dataset's teacher).")
@click.option("--epochs", default=None, type=int, help="Training epochs (default: the dataset's recipe).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@data_options
@click.option("--smoke", is_flag=True, help="A few steps only: check the data and model end to end.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def teacher_train_cmd(dataset: str, arch: str | None, epochs: int | None, seed: int, device: str,
                      data_root: str | None, classes: str | None, download: bool, smoke: bool, quiet: bool) -> None:
    """Train a teacher on the real train split (SGD, cosine; 200 epochs for CIFAR) and cache it with its card."""
    from .teachers import recipe_for, trained_teacher

    spec, arch, dev = _teacher_arguments(dataset, arch, classes, device)
    recipe = recipe_for(spec, smoke, **({"epochs": epochs} if epochs is not None else {}))
    source = _teacher_data(dataset, spec, data_root, download, need_data=True)
    train_size = source.train_size
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
                        disable=quiet)
    with progress:
        task = progress.add_task(f"teacher {arch} on {spec.name} ({train_size} images, {recipe.epochs} epochs)",
                                 total=None, info="")
        _, card = trained_teacher(
            spec, arch, source, dev, seed, recipe, smoke,
            on_step=lambda done, total: progress.update(task, completed=done, total=total),
            on_epoch=lambda epoch, epochs, loss: progress.update(task, info=f"epoch {epoch}/{epochs} loss {loss:.3f}"))
    if not quiet:
        _print_card(card)


@teacher_group.command("import")
@click.argument("file", required=False, type=click.Path())
@click.option("--dataset", required=True, help="Dataset the teacher classifies.")
@click.option("--arch", required=True, help="Architecture of the checkpoint (`dfkd-bench models`).")
@click.option("--teacher-weights", default=None, help="Instead of FILE: a torchvision weight set, e.g. IMAGENET1K_V1.")
@click.option("--device", default="auto", show_default=True)
@data_options
def teacher_import_cmd(file: str | None, dataset: str, arch: str, teacher_weights: str | None, device: str,
                       data_root: str | None, classes: str | None, download: bool) -> None:
    """Cache a teacher trained elsewhere (.pt/.pth/.safetensors, loaded strictly with weights_only);
    a 1000-class ImageNet one is restricted to an ImageNet subset's classes."""
    from .teachers import check_checkpoint, import_teacher, torchvision_teacher, torchvision_weights

    if bool(file) == bool(teacher_weights):
        raise UserError("teacher import needs exactly one of FILE or --teacher-weights NAME")
    spec, arch, dev = _teacher_arguments(dataset, arch, classes, device)
    if file:
        check_checkpoint(file, spec, arch)
    else:
        torchvision_weights(arch, teacher_weights)
    source = _teacher_data(dataset, spec, data_root, download, need_data=False)
    if file:
        _, card = import_teacher(file, spec, arch, dev, source)
    else:
        _, card = torchvision_teacher(spec, arch, teacher_weights, dev, source)
    _print_card(card)


@cli.command("teachers")
def teachers_cmd() -> None:
    """List the cached teachers with their cards (newest first)."""
    from .teachers import list_teachers, teachers_dir

    cards = list_teachers()
    if not cards:
        console.print(f"no cached teachers in {teachers_dir()}")
        return
    table = Table(title=f"cached teachers ({teachers_dir()})")
    for col in ["dataset", "arch", "classes", "test acc", "source", "seed", "smoke", "created", "sha256", "file"]:
        table.add_column(col)
    for c in cards:
        acc = "-" if c.test_acc is None else f"{c.test_acc:.2f}"
        source = c.source + (f" (from {c.restricted_from})" if c.restricted_from else "")
        table.add_row(c.dataset, c.arch, str(c.num_classes), acc, source, str(c.seed), "yes" if c.smoke else "",
                      c.created_at, c.sha256[:12], Path(c.path).name)
    console.print(table)


@cli.command("table")
@click.option("--results", "out_dir", default="results", show_default=True, type=click.Path(),
              help="Output folder holding runs.csv.")
@click.option("--rows", default="method", show_default=True, help="runs.csv column(s) for rows, comma-separated.")
@click.option("--cols", default="ratio", show_default=True, help="runs.csv column(s) for columns, comma-separated.")
@click.option("--metric", default="student_acc", show_default=True,
              help="student_acc, total_s (or synth_s, kd_s, eval_s, teacher_acc), n_synthetic (images made) or "
                   "t<threshold>_s, e.g. t95_s.")
@click.option("--format", "fmt", default="markdown", show_default=True,
              type=click.Choice(["markdown", "latex", "csv"]))
@click.option("--published", is_flag=True, help="Add published accuracy for the same dataset and teacher/student.")
@click.option("--threshold", default=None, type=float,
              help="Accuracy (%) for --metric t<threshold>_s (default: the number in the metric's name).")
def table_cmd(out_dir: str, rows: str, cols: str, metric: str, fmt: str, published: bool,
              threshold: float | None) -> None:
    """Pivot runs.csv: mean ± std (seeds) of one metric per rows x cols; best of each column in bold."""
    from .report.pivot import build_pivot, render_csv, render_latex, render_markdown
    from .report.tables import require_runs_csv

    require_runs_csv(out_dir)
    pivot = build_pivot(out_dir, rows=rows, cols=cols, metric=metric, threshold=threshold, published=published,
                        classes_of=_class_count)
    if fmt == "csv":
        click.echo(render_csv(pivot), nl=False)
        for line in pivot.footnotes:
            click.echo(line, err=True)
        if pivot.note:
            click.echo(pivot.note, err=True)
        click.echo(pivot.left_out_line(), err=True)
    elif fmt == "latex":
        click.echo(render_latex(pivot))
    else:
        click.echo(render_markdown(pivot))


@cli.command("embed-labels")
@click.option("--dataset", default=None, help="Dataset whose class names to embed.")
@click.option("--classes", "classes_file", default=None, type=click.Path(), help="File with one class name a line.")
@click.option("--prompt", default=None, help="Prompt template with {} for the class name.")
@click.option("--out", "out_file", required=True, type=click.Path(), help="Output .npz file.")
def embed_labels_cmd(dataset: str | None, classes_file: str | None, prompt: str | None, out_file: str) -> None:
    """Compute label-text embeddings with all-MiniLM-L6-v2 (needs the `text` extra)."""
    from . import label_embeddings as le

    if bool(dataset) == bool(classes_file):
        raise UserError("embed-labels needs exactly one of --dataset NAME or --classes FILE")
    names = le.read_class_names(classes_file) if classes_file else list(DATASETS.get(dataset).class_names)
    emb = le.compute_label_embeddings(names, prompt or le.default_prompt(dataset))
    le.save_label_embeddings(emb, out_file)
    console.print(f"{emb.num_classes} label embeddings ({emb.dim}-d, prompt {emb.prompt!r}) -> {out_file}")


@cli.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder to merge into (may be an input).")
def merge_cmd(inputs: tuple[str, ...], out_dir: str) -> None:
    """Combine output folders (e.g. from shards on different machines) by run_id into --out.

    A finished run (ok or diverged) beats an unfinished or failed one; the same finished result twice is
    merged once. Two different finished results are a conflict: the --out version (or the first folder's)
    is kept, each conflict is reported on one line, everything else is still written, and the exit status is 1.
    """
    from .merge import merge_outputs

    result = merge_outputs(list(inputs), out_dir)
    for conflict in result.conflicts:
        click.echo(conflict.line(), err=True)
    click.echo(result.summary())
    if result.conflicts:
        sys.exit(1)


PLOT_KINDS = ("time-accuracy", "time-budget", "resolution", "ratio-accuracy", "curves", "samples", "all")


@cli.command("plot")
@click.argument("kind", required=False, metavar="[KIND]", type=click.Choice(PLOT_KINDS))
@click.option("--results", "results_dir", default=None, type=click.Path(),
              help="Output folder holding runs.csv.  [default: results]")
@click.option("--out", default=None, type=click.Path(),
              help="FILE.png for one KIND, a folder for `all`.  [default: RESULTS/figures]")
@click.option("--to", "old_to", default=None, type=click.Path(), hidden=True,
              help="Deprecated: figure folder of the old `plot --out RESULTS --to FIGDIR`.")
@click.option("--pdf", is_flag=True, help="Also write a PDF next to each PNG.")
@click.option("--methods", default=None, help="Only these methods, e.g. muse,fast (colours stay the same).")
def plot_cmd(kind: str | None, results_dir: str | None, out: str | None, old_to: str | None, pdf: bool,
             methods: str | None) -> None:
    """Paper figures: time-accuracy bubbles, accuracy at equal time, resolution bars, ratio-accuracy lines,
    training curves, samples.

    KIND is one of time-accuracy, time-budget, resolution, ratio-accuracy, curves, samples (written to --out
    FILE.png) or `all` (each under its own name in the --out folder, skipping, with a note, kinds that have no
    data).
    """
    from .report import plots

    old_spelling = kind is None
    if old_spelling:
        if results_dir is not None:
            raise UserError("plot without KIND is the deprecated `plot --out RESULTS [--to FIGDIR]`; "
                            "use `plot all --results RESULTS --out FIGDIR`")
        kind, results_dir, out = "all", out or "results", old_to
    elif old_to is not None:
        raise UserError("--to belongs to the deprecated `plot --out RESULTS --to FIGDIR`; "
                        f"use `plot {kind} --results RESULTS --out ...`")
    results_dir = results_dir or "results"
    res = plots.load_results(results_dir)
    if methods is not None:
        res = plots.select_methods(res, methods)
    if old_spelling:
        _deprecated("plot --out DIR [--to FIGDIR]", "plot all --results DIR --out FIGDIR")
    if kind == "all":
        written, skipped = plots.write_all(res, _plot_folder(out, results_dir), pdf)
        for note in skipped:
            click.echo(f"note: {note}", err=True)
    else:
        written = plots.write_one(res, kind, _plot_file(out, results_dir, plots.KINDS[kind]), pdf)
    for path in written:
        click.echo(str(path))


def _plot_folder(out: str | None, results_dir: str) -> Path:
    """The folder `plot all` writes into: --out, or RESULTS/figures."""
    if out and Path(out).suffix.lower() in (".png", ".pdf"):
        raise UserError(f"`plot all` writes several files: --out must be a folder, not {out}")
    return Path(out) if out else Path(results_dir) / "figures"


def _plot_file(out: str | None, results_dir: str, name: str) -> Path:
    """The PNG one `plot KIND` writes: --out FILE.png, `name` in an --out folder, or RESULTS/figures/`name`."""
    if not out:
        return Path(results_dir) / "figures" / name
    suffix = Path(out).suffix.lower()
    if suffix == ".png":
        return Path(out)
    if suffix:
        raise UserError(f"--out {out}: give a .png file (add --pdf for a PDF next to it) or a folder")
    return Path(out) / name


class OnceWarnings:
    """`warnings.showwarning` for one command: each warning (a train-size mismatch, failed checksums, a
    folder alias) as one `warning:` line on stderr, the first time its text comes up only."""

    def __init__(self) -> None:
        self.shown: set[str] = set()

    def __call__(self, message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
        text = " ".join(str(message).split())
        if text not in self.shown:
            self.shown.add(text)
            click.echo(f"warning: {text}", err=True)


INVOCATION: list[str] = []  # the command line `main` was given (what `run --nproc N` passes to each process)


def _without_nproc(args: list[str]) -> list[str]:
    """The arguments without `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input gets one line on stderr and exit status 2, never a traceback."""
    args = sys.argv[1:] if argv is None else argv
    INVOCATION[:] = args
    warnings.showwarning = OnceWarnings()
    if not args:
        with click.Context(cli, info_name="dfkd-bench") as ctx:
            click.echo(cli.get_help(ctx))
        return
    try:
        cli.main(args=args, prog_name="dfkd-bench", standalone_mode=False)
    except UserError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except click.UsageError as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(2)
    except click.exceptions.Abort:
        click.echo("interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; run the same command again to resume from the last checkpoint", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        click.echo(f"error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
