"""`plot time-budget` and the runs every figure reads: a run over its time budget is an ×, never an accuracy, in
the equal-time figure and is in no curve panel; `--methods` keeps colours; method kinds need no torch."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer

from cli_helpers import ok
from dfkd_bench.report import plots
from dfkd_bench.report.plot_layout import legends
from figure_grids import NEW_COLUMNS, run_row, write_folder

PNG = b"\x89PNG\r\n\x1a\n"


def budgeted(method: str, budget: int, seed: int, acc: float, over: bool = False) -> dict:
    """A ratio-1 run at 32 px that spent 90% of its budget, or half as much again as it when `over`."""
    return run_row(method, 1.0, "32", seed, acc, budget * (1.5 if over else 0.9) + 0.1, str(budget),
                   "over_budget" if over else "ok")


@pytest.fixture(scope="module")
def res(tmp_path_factory: pytest.TempPathFactory) -> plots.Results:
    """fast: both seeds over 5 s, one seed over 20 s, none over 60 s; muse: every budget kept; plain runs too."""
    rows = [budgeted("fast", 5, s, 0.0, over=True) for s in (0, 1)]
    rows += [budgeted("fast", 20, 0, 70.0), budgeted("fast", 20, 1, 0.0, over=True)]
    rows += [budgeted("fast", 60, s, acc) for s, acc in ((0, 90.0), (1, 94.0))]
    rows += [budgeted("muse", b, s, 40.0 + b / 2 + s) for b in (5, 20, 60) for s in (0, 1)]
    rows += [run_row(m, 0.1, "32", s, 80.0, 30.0) for m in ("fast", "muse") for s in (0, 1)]
    return plots.load_results(write_folder(tmp_path_factory.mktemp("budgets"), rows))


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_over_budget_runs_are_kept_apart(res: plots.Results) -> None:
    assert sorted(zip(res.over["time_budget"], res.over["seed"])) == [("20", 1), ("5", 0), ("5", 1)]
    assert res.runs["student_acc"].notna().all()
    kept = res.within_budget()
    assert sorted(set(kept.loc[kept["method"] == "fast", "time_budget"])) == ["", "60"]


def test_time_budget_marks_over_budget_configs(res: plots.Results) -> None:
    fig = plots.make_figure("time-budget", res)
    ax, strip = fig.axes
    series = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    fast, muse = series["fast 32px"], series["muse 32px"]
    dodge = 10 ** (-0.5 * 0.012)  # two series, nudged apart on the log axis
    assert np.allclose(fast.lines[0].get_xdata(), [60 * dodge]) and list(fast.lines[0].get_ydata()) == [92.0]
    low, high = fast.lines[2][0].get_segments()[0][:, 1]
    assert (low, high) == (90.0, 94.0)  # min–max over seeds
    assert np.allclose(muse.lines[0].get_xdata(), [5 / dodge, 20 / dodge, 60 / dodge])
    marks = [line for line in strip.lines if line.get_marker() == "x"]
    assert [list(np.round(line.get_xdata() / dodge)) for line in marks if len(line.get_xdata())] == [[5.0, 20.0]]
    assert [t.get_text() for t in strip.get_yticklabels()] == ["fast"]
    assert ax.get_xscale() == "log" and [t.get_text() for t in strip.get_xticklabels()] == ["5", "20", "60"]
    texts = [t.get_text() for leg in legends(fig) for t in leg.get_texts()]
    assert texts == ["fast", "muse", "32px", "over budget (no accuracy)"]
    assert "min–max over seeds" in fig.subfigs[0].get_suptitle() and "×" in fig.subfigs[0].get_suptitle()


def test_curves_leave_out_configs_over_budget(res: plots.Results) -> None:
    fig = plots.make_figure("curves", res)
    panels = {ax.get_title(): sorted(line.get_label() for line in ax.lines) for ax in fig.axes}
    assert panels == {"ratio 0.1": ["fast 32px", "muse 32px"], "ratio ≤ 1, 5 s budget": ["muse 32px"],
                      "ratio ≤ 1, 20 s budget": ["muse 32px"], "ratio ≤ 1, 60 s budget": ["fast 32px", "muse 32px"]}


def test_an_old_file_overran_by_more_than_five_percent(tmp_path: Path) -> None:
    """Without tolerance_s, a budgeted run that spent over 105% of its budget went over it."""
    rows = [run_row("fast", 1.0, "32", 0, 90.0, 5.3, "5"), run_row("fast", 1.0, "32", 1, 95.0, 8.1, "5")]
    res = plots.load_results(write_folder(tmp_path, rows, old_format=True))
    assert list(res.runs["seed"]) == [0] and list(res.over["seed"]) == [1]


def test_other_image_budgets_are_left_out(tmp_path: Path) -> None:
    rows = [run_row("dfad", 0.1, "32", 0, 20.0, 9.0), {**run_row("dfad", 0.1, "32", 1, 90.0, 99.0), "budget": "steps"}]
    res = plots.load_results(write_folder(tmp_path, rows))
    assert list(res.runs["seed"]) == [0]


def test_method_kinds_without_torch(tmp_path: Path) -> None:
    rows = [run_row(m, 0.1, "32", 0, 50.0, 9.0) for m in ("fast", "zskt", "mygan")]
    rows[2]["paper_kd_steps"] = 5000  # a plugin's online method, known by its reference step count
    res = plots.load_results(write_folder(tmp_path, rows))
    assert res.online_methods() == {"zskt", "mygan"}
    old = plots.load_results(write_folder(tmp_path / "old", rows, old_format=True))
    assert old.online_methods() == {"zskt"} and "paper_kd_steps" in NEW_COLUMNS


def test_methods_filter_keeps_colours(res: plots.Results, tmp_path: Path) -> None:
    muse = plots.select_methods(res, "muse")
    assert muse.methods == ["muse"] and muse.color("muse") == res.color("muse") != res.color("fast")
    out = ok(["plot", "time-budget", "--results", str(res.folder), "--methods", "muse", "--out",
              str(tmp_path / "m.png")])
    assert out.strip() == str(tmp_path / "m.png") and (tmp_path / "m.png").read_bytes().startswith(PNG)


def test_missing_new_columns_do_not_crash(tmp_path: Path) -> None:
    rows = [run_row("fast", 1.0, "32", 0, 90.0, 4.6, "5"), run_row("fast", 0.1, "32", 0, 70.0, 30.0)]
    frame = pd.DataFrame(rows).drop(columns=NEW_COLUMNS + ["budget", "status"])
    folder = write_folder(tmp_path, rows)
    frame.assign(status="ok").to_csv(folder / "runs.csv", index=False)
    res = plots.load_results(folder)
    for kind in ("time-accuracy", "time-budget", "ratio-accuracy", "curves"):
        plots.make_figure(kind, res)
    assert len(res.runs) == 2


def test_only_over_budget_runs(tmp_path: Path) -> None:
    """Every kind but the equal-time figure has nothing to draw, and says so."""
    rows = [run_row("deepinversion", 1.0, "32", s, 0.0, 8.0, "5", "over_budget") for s in (0, 1)]
    res = plots.load_results(write_folder(tmp_path, rows))
    assert len(res.over) == 2 and res.runs.empty
    for kind in plots.KINDS:
        if kind == "time-budget":
            assert [t.get_text() for t in plots.make_figure(kind, res).axes[1].get_yticklabels()] == ["deepinversion"]
        else:
            with pytest.raises(plots.NoData):
                plots.make_figure(kind, res)
