"""Figures like the MUSE paper's, from a results folder (matplotlib/seaborn with the Agg backend; no torch).

Every figure draws a method in the same colour and a resolution with the same line style, marker and hatch
(`plot_results`), and lays out its legends outside the plots (`plot_layout`). Runs without a time budget make
the time-accuracy, ratio and resolution figures; budgeted runs make the time-budget figure and curve panels of
their own, and a run that went over its budget is drawn as such, never as an accuracy. Each `*_figure`
function returns the open matplotlib Figure; `write_one` and `write_all` save PNG files (and PDFs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from .plot_curves import curves_figure, mean_curve, read_curves
from .plot_ratio import ratio_accuracy_figure
from .plot_resolution import resolution_figure
from .plot_results import NoData, Results, load_results, method_palette, resolution_key, select_methods
from .plot_samples import image_strip, pick_images, pick_sample_run, samples_figure
from .plot_time_accuracy import BUBBLE_MAX, time_accuracy_figure
from .plot_time_budget import time_budget_figure

__all__ = ["BUBBLE_MAX", "BUILDERS", "KINDS", "NoData", "Results", "image_strip", "load_results", "make_figure",
           "mean_curve", "method_palette", "pick_images", "pick_sample_run", "read_curves", "resolution_key",
           "save_figure", "select_methods", "write_all", "write_one"]

KINDS: dict[str, str] = {
    "time-accuracy": "time_accuracy.png",
    "time-budget": "time_budget.png",
    "resolution": "resolution.png",
    "ratio-accuracy": "ratio_accuracy.png",
    "curves": "curves.png",
    "samples": "samples.png",
}

BUILDERS: dict[str, Callable[[Results], Figure]] = {
    "time-accuracy": time_accuracy_figure,
    "time-budget": time_budget_figure,
    "resolution": resolution_figure,
    "ratio-accuracy": ratio_accuracy_figure,
    "curves": curves_figure,
    "samples": samples_figure,
}


def make_figure(kind: str, res: Results) -> Figure:
    """The open figure of one kind (a key of KINDS), drawn in seaborn's whitegrid style."""
    with sns.axes_style("whitegrid"):
        return BUILDERS[kind](res)


def save_figure(fig: Figure, path: str | Path, pdf: bool = False) -> list[Path]:
    """Write `fig` as PNG at `path` (and a PDF next to it) and close it; the paths written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    written = [path] + ([path.with_suffix(".pdf")] if pdf else [])
    for target in written:
        fig.savefig(target, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return written


def write_one(res: Results, kind: str, path: str | Path, pdf: bool = False) -> list[Path]:
    """One figure to `path` (PNG, plus PDF if asked); NoData (a UserError) when the kind has nothing to draw."""
    return save_figure(make_figure(kind, res), path, pdf)


def write_all(res: Results, folder: str | Path, pdf: bool = False) -> tuple[list[Path], list[str]]:
    """Every kind into `folder` under its KINDS file name; the paths written and a note per kind skipped."""
    written: list[Path] = []
    skipped: list[str] = []
    for kind, name in KINDS.items():
        try:
            written += write_one(res, kind, Path(folder) / name, pdf)
        except NoData as exc:
            skipped.append(f"skipped {kind}: {exc}")
    return written, skipped
