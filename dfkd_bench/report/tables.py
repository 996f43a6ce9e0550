"""Comparison tables from runs.csv rows (pandas; no torch)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from ..errors import UserError
from . import latex
from .footnotes import OVER_BUDGET, ClassCount, Footnotes, markdown_lines, overran

GROUP_KEYS = ["method", "dataset", "teacher", "student", "ratio", "resolution", "amp", "variant", "time_budget"]
TIME_TO_ACCURACY = re.compile(r"^t\d+(?:\.\d+)?_s$")  # columns added by add_time_to_accuracy, e.g. t95_s
NUMERIC = ["teacher_acc", "student_acc", "synth_s", "kd_s", "eval_s", "total_s", "n_synthetic", "peak_mem_mb"]


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows (as written to runs.csv) to a DataFrame with numeric columns parsed."""
    df = pd.DataFrame(list(rows))
    for col in NUMERIC + ["ratio", "seed"]:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df.assign(time_budget=budget_labels(df), amp=precision_labels(df))


def precision_labels(df: pd.DataFrame) -> pd.Series:
    """`amp` as a grouping label, "bf16" or "fp32": the precision a row records, or for a row written before the
    column the default of its time (fp32 on the CPU, bf16 autocast on CUDA); "" where the device is unknown too."""
    recorded = df["amp"] if "amp" in df else pd.Series("", index=df.index, dtype=object)
    recorded = recorded.map(lambda v: "" if pd.isna(v) else str(v).strip())
    device = df["device"] if "device" in df else pd.Series("", index=df.index, dtype=object)
    legacy = device.map(lambda v: "" if pd.isna(v) or not str(v).strip() else "fp32" if str(v).strip() == "cpu"
                        else "bf16")
    return recorded.where(recorded != "", legacy).astype(object)


def mixed_precision(df: pd.DataFrame) -> bool:
    """Whether the rows hold more than one precision (then a table must show it: its means never mix them)."""
    return "amp" in df and df["amp"].nunique() > 1


def budget_labels(df: pd.DataFrame) -> pd.Series:
    """`time_budget` as a grouping label: seconds like `20` or `1.5`, or "" for unbudgeted runs (and old files
    without the column), so budgeted and unbudgeted runs never share a group."""
    if "time_budget" not in df:
        return pd.Series("", index=df.index, dtype=object)
    seconds = pd.to_numeric(df["time_budget"], errors="coerce")
    return seconds.map(lambda v: "" if pd.isna(v) else format(float(v), "g")).astype(object)


def is_smoke(df: pd.DataFrame) -> pd.Series:
    """Rows written by `--smoke` checks (not results)."""
    if "smoke" not in df:
        return pd.Series(False, index=df.index)
    return df["smoke"].astype(str).str.strip().isin(["1", "1.0", "True", "true"])


def chosen_methods(names: str, present: Iterable[str]) -> list[str]:
    """`--methods`: the comma-separated `names`, each one with runs here; a UserError naming the choices otherwise."""
    choices = sorted(set(present))
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in choices]
    if not wanted or unknown:
        raise UserError(f"--methods {names!r}: {'unknown method ' + ', '.join(unknown) if unknown else 'no method'}"
                        f"; choose from {', '.join(choices)}")
    return wanted


def require_runs_csv(out_dir: str | Path) -> None:
    """A one-line UserError naming the folder and the --results option when `out_dir` has no runs.csv."""
    if not (Path(out_dir) / "runs.csv").exists():
        raise UserError(f"no runs.csv in {out_dir}; run `dfkd-bench run` first or pass --results DIR")


def read_runs_csv(out_dir: str | Path, include_smoke: bool = False) -> pd.DataFrame:
    """runs.csv of an output folder as a DataFrame; smoke-check rows are left out unless asked for."""
    df = runs_frame(pd.read_csv(Path(out_dir) / "runs.csv", dtype=str).to_dict("records"))
    return df if include_smoke else df[~is_smoke(df)].reset_index(drop=True)


def summary_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs a summary counts, with their variant (the run id's hash): finished ok, and over budget (they
    show their seconds, never an accuracy)."""
    status = df["status"].fillna("").astype(str).str.strip()
    return df[status.isin(["ok", OVER_BUDGET])].assign(
        variant=lambda d: d["run_id"].astype(str).str.rsplit("-", n=1).str[-1], time_budget=budget_labels,
        amp=precision_labels)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of accuracy and per-phase seconds, per configuration
    (plus, for any time-to-accuracy column `t<threshold>_s`, its mean over the seeds that got there and
    `t<threshold>_reached`, how many did). A configuration with a run over its time budget has no accuracy
    (NaN); one seed has no spread (NaN)."""
    extra = [c for c in df.columns if TIME_TO_ACCURACY.match(c)]
    runs = summary_runs(df)
    if runs.empty:
        return pd.DataFrame(columns=GROUP_KEYS)
    grouped = runs.assign(overran=overran(runs)).groupby(GROUP_KEYS, sort=False)
    out = grouped.agg(
        seeds=("seed", "nunique"),
        teacher_acc=("teacher_acc", "mean"),
        student_acc=("student_acc", "mean"),
        student_acc_std=("student_acc", "std"),
        synth_s=("synth_s", "mean"),
        kd_s=("kd_s", "mean"),
        total_s=("total_s", "mean"),
        images=("n_synthetic", "mean"),
        **{c: (c, "mean") for c in extra},
        **{c.replace("_s", "_reached"): (c, "count") for c in extra},
        overran=("overran", "any"),
    ).reset_index()
    out.loc[out["overran"], ["student_acc", "student_acc_std"]] = float("nan")
    return out.drop(columns=["overran"] + ([] if mixed_precision(runs) else ["amp"]))


def marked_summary(df: pd.DataFrame, classes_of: ClassCount | None = None) -> tuple[pd.DataFrame, list[str]]:
    """`summarize(df)` with student accuracy and its spread as text (`9.80†` near chance, `—‡` over budget,
    `—` for the spread of one seed), and the footnotes explaining the marks."""
    summary = summarize(df)
    if summary.empty:
        return summary, []
    notes = Footnotes()
    accuracy, spread = [], []
    groups = (part for _, part in summary_runs(df).groupby(GROUP_KEYS, sort=False))
    for row, part in zip(summary.to_dict("records"), groups):
        where = f"ratio={row['ratio']:g}, resolution={row['resolution']}" + (
            f", amp={row['amp']}" if "amp" in row else "") + (
            f", time_budget={row['time_budget']}" if row["time_budget"] else "")
        mark = notes.mark(row["method"], where, part, row["student_acc"], classes_of)
        accuracy.append(_two_decimals(row["student_acc"]) + mark)
        spread.append(_two_decimals(row["student_acc_std"]))
    return summary.assign(student_acc=accuracy, student_acc_std=spread), notes.lines()


def _two_decimals(value: float) -> str:
    return "—" if pd.isna(value) else f"{value:.2f}"


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub-markdown table without the optional `tabulate` dependency."""
    cols = list(df.columns)

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def render_summary(table: pd.DataFrame, footnotes: list[str], fmt: str) -> str:
    """A `marked_summary` table as markdown or LaTeX with its footnotes under it, or as CSV (the table only:
    the caller prints the footnotes apart, so the CSV stays parseable)."""
    if fmt == "csv":
        return table.to_csv(index=False)
    if fmt == "latex":
        texts = {c: table[c].map(latex.typeset) for c in ("student_acc", "student_acc_std") if c in table}
        body = table.assign(**texts).to_latex(index=False, float_format="%.2f")
        return "\n".join([body.rstrip("\n"), *latex.footnote_lines(footnotes)])
    return "\n".join([to_markdown(table), "", *markdown_lines(footnotes)]).rstrip("\n")


def time_to_accuracy(curve: pd.DataFrame, threshold: float) -> float:
    """Elapsed synthesis+KD seconds at the first evaluation reaching `threshold` percent (NaN if never)."""
    hit = curve[curve["student_acc"] >= threshold]
    return float(hit["elapsed_s"].iloc[0]) if len(hit) else float("nan")


def add_time_to_accuracy(df: pd.DataFrame, out_dir: str | Path, threshold: float) -> pd.DataFrame:
    """Add a `t{threshold}_s` column per run from runs/<run_id>/curve.csv (or curves/<run_id>.csv, the
    layout of the checked-in reference results)."""
    column = f"t{threshold:g}_s"
    values = []
    for run_id in df["run_id"]:
        path = find_run_file(out_dir, run_id, "curve.csv")
        values.append(time_to_accuracy(pd.read_csv(path), threshold) if path else float("nan"))
    return df.assign(**{column: values})


def find_run_file(out_dir: str | Path, run_id: Any, name: str) -> Path | None:
    """A run's file `name` (e.g. curve.csv, samples.npz) at runs/<run_id>/<name>, or in the checked-in reference
    layout at <stem>s/<run_id><suffix> (curves/<run_id>.csv, samples/<run_id>.npz); None if neither exists."""
    stem, suffix = Path(name).stem, Path(name).suffix
    flat = stem if stem.endswith("s") else f"{stem}s"
    candidates = (Path(out_dir) / "runs" / str(run_id) / name, Path(out_dir) / flat / f"{run_id}{suffix}")
    return next((p for p in candidates if p.exists()), None)
