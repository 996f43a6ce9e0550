"""Commands that read results: `table`, `report`, `plot` and `merge`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import UserError
from .common import class_count, cli, warn_deprecated


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
    from ..report import read_runs_csv
    from ..report.tables import add_time_to_accuracy, marked_summary, render_summary, require_runs_csv

    if old_out is not None:
        if results_dir is not None:
            raise UserError("report takes --results DIR; --out DIR is its deprecated spelling: give only --results")
    out_dir = results_dir or old_out or "results"
    require_runs_csv(out_dir)
    if old_out is not None:
        warn_deprecated("report --out DIR", "report --results DIR")
    df = read_runs_csv(out_dir)
    if threshold is not None:
        df = add_time_to_accuracy(df, out_dir, threshold)
    table, footnotes = marked_summary(df, class_count)
    click.echo(render_summary(table, footnotes, fmt), nl=fmt != "csv")
    if fmt == "csv":
        for line in footnotes:
            click.echo(line, err=True)


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
@click.option("--methods", default=None, help="Only these methods, e.g. dafl,dfq,zskt,dfad.")
def table_cmd(out_dir: str, rows: str, cols: str, metric: str, fmt: str, published: bool,
              threshold: float | None, methods: str | None) -> None:
    """Pivot runs.csv: mean ± std (seeds) of one metric per rows x cols; best of each column in bold."""
    from ..report.pivot import build_pivot, render_csv, render_latex, render_markdown
    from ..report.tables import require_runs_csv

    require_runs_csv(out_dir)
    pivot = build_pivot(out_dir, rows=rows, cols=cols, metric=metric, threshold=threshold, published=published,
                        classes_of=class_count, methods=methods)
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


@cli.command("merge")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--out", "out_dir", required=True, type=click.Path(), help="Folder to merge into (may be an input).")
def merge_cmd(inputs: tuple[str, ...], out_dir: str) -> None:
    """Combine output folders (e.g. from shards on different machines) by run_id into --out.

    A finished run (ok or diverged) beats an unfinished or failed one; the same finished result twice is
    merged once. Two different finished results are a conflict: the --out version (or the first folder's)
    is kept, each conflict is reported on one line, everything else is still written, and the exit status is 1.
    """
    from ..merge import merge_outputs

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
    from ..report import plots

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
        warn_deprecated("plot --out DIR [--to FIGDIR]", "plot all --results DIR --out FIGDIR")
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
