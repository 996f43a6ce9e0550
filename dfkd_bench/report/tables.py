"""Comparison tables from runs.csv rows (pandas; no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import pandas as pd

GROUP_KEYS = ["method", "dataset", "teacher", "student", "ratio", "resolution"]
NUMERIC = ["teacher_acc", "student_acc", "synth_s", "kd_s", "eval_s", "total_s", "n_synthetic", "peak_mem_mb"]


def runs_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Rows (as written to runs.csv) to a DataFrame with numeric columns parsed."""
    df = pd.DataFrame(list(rows))
    for col in NUMERIC + ["ratio", "seed"]:
        if col in df:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def read_runs_csv(out_dir: str | Path) -> pd.DataFrame:
    """runs.csv of an output folder as a DataFrame."""
    return runs_frame(pd.read_csv(Path(out_dir) / "runs.csv", dtype=str).to_dict("records"))


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of accuracy and per-phase seconds, per configuration."""
    ok = df[df["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=GROUP_KEYS)
    grouped = ok.groupby(GROUP_KEYS, sort=False)
    out = grouped.agg(
        seeds=("seed", "nunique"),
        teacher_acc=("teacher_acc", "mean"),
        student_acc=("student_acc", "mean"),
        student_acc_std=("student_acc", "std"),
        synth_s=("synth_s", "mean"),
        kd_s=("kd_s", "mean"),
        total_s=("total_s", "mean"),
        images=("n_synthetic", "mean"),
    ).reset_index()
    out["student_acc_std"] = out["student_acc_std"].fillna(0.0)
    return out


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
