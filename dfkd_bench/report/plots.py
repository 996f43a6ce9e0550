"""Figures like the MUSE paper's, from results files (matplotlib/seaborn; no torch)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from .tables import summarize  # noqa: E402


def accuracy_vs_time(df: pd.DataFrame, path: str | Path) -> Path:
    """Bubble chart: mean total seconds (x) against mean student accuracy (y), bubble area by data ratio."""
    summary = summarize(df)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    sns.scatterplot(data=summary, x="total_s", y="student_acc", hue="method", size="ratio", sizes=(40, 600),
                    alpha=0.7, ax=ax)
    ax.set_xlabel("training time (s): synthesis + KD + eval")
    ax.set_ylabel("student accuracy (%)")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def accuracy_vs_ratio(df: pd.DataFrame, path: str | Path) -> Path:
    """Mean student accuracy against data ratio, one line per method and resolution, std as error bars."""
    summary = summarize(df)
    summary["series"] = summary["method"] + " @" + summary["resolution"].astype(str) + "px"
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, part in summary.sort_values("ratio").groupby("series"):
        ax.errorbar(part["ratio"], part["student_acc"], yerr=part["student_acc_std"], marker="o", capsize=3,
                    label=name)
    ax.set_xscale("log")
    ratios = sorted(summary["ratio"].unique())
    ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
    ax.minorticks_off()
    ax.set_xlabel("data ratio (synthetic / real training images)")
    ax.set_ylabel("student accuracy (%)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def curves(out_dir: str | Path, df: pd.DataFrame, path: str | Path) -> Path:
    """Student accuracy against elapsed synthesis+KD seconds for every finished run."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for row in df[df["status"] == "ok"].itertuples(index=False):
        curve_path = Path(out_dir) / "runs" / str(row.run_id) / "curve.csv"
        if curve_path.exists():
            curve = pd.read_csv(curve_path)
            ax.plot(curve["elapsed_s"], curve["student_acc"], alpha=0.7,
                    label=f"{row.method} r={row.ratio:g} {row.resolution}px s{row.seed}")
    ax.set_xlabel("elapsed synthesis + KD seconds")
    ax.set_ylabel("student accuracy (%)")
    ax.grid(alpha=0.3)
    if len(ax.lines) <= 12:
        ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: plt.Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
