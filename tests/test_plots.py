"""`dfkd-bench plot KIND`: the paper figures from a hand-made results folder (runs.csv, curves, samples.npz) and
from the checked-in reference results; figures are inspected as matplotlib objects, files by magic bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure

from cli_helpers import ok, one_line_error, run_cli
from dfkd_bench.cli import results as cli_results
from dfkd_bench.report import plots, read_runs_csv, summarize
from dfkd_bench.report.plot_layout import legends
from figure_grids import DIGIT_NAMES, run_row, write_run_files

REFERENCE = Path(__file__).parent.parent / "results" / "digits"
METHODS = ["nayer", "fast", "muse"]
RATIOS = [0.1, 0.5]
RESOLUTIONS = ["16", "32"]
BUDGETS = [5, 10]
CLASSES = ("zero", "one", "two", "three")
PNG, PDF = b"\x89PNG\r\n\x1a\n", b"%PDF"


def accuracy(method: str, ratio: float, resolution: str, seed: int) -> float:
    """A distinct, known accuracy per run."""
    return 50 + 10 * METHODS.index(method) + 20 * ratio + (5 if resolution == "32" else 0) + seed


def _row(method: str, ratio: float, resolution: str, seed: int, budget: str = "", status: str = "ok",
         smoke: str = "0") -> dict:
    """A run with a known accuracy; a budgeted one spends 90% of its budget (plus a tenth of a second a seed)."""
    total = 0.9 * float(budget) + 0.1 * seed if budget else 100 * ratio + 10 * seed
    return run_row(method, ratio, resolution, seed, accuracy(method, ratio, resolution, seed), total, budget, status,
                   smoke)


def write_results(folder: Path, resolutions: list[str] = RESOLUTIONS, budgets: bool = True) -> Path:
    """3 methods x 2 ratios x `resolutions` x 2 seeds, fast also under two time budgets; a smoke and a failed row."""
    rows = [_row(m, r, res, s) for m in METHODS for r in RATIOS for res in resolutions for s in (0, 1)]
    if budgets:
        rows += [_row("fast", 0.5, resolutions[-1], s, budget=str(b)) for b in BUDGETS for s in (0, 1)]
    for row in rows:
        write_run_files(folder, row, channels=1 if row["method"] == "nayer" else 3, classes=CLASSES)
    rows += [_row("muse", 0.1, "16", 7, smoke="1"), _row("muse", 0.1, "16", 8, status="failed")]
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("plots"))


@pytest.fixture(scope="module")
def one_resolution(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("plots1"), resolutions=["32"], budgets=False)


@pytest.fixture(scope="module")
def res(results: Path) -> plots.Results:
    return plots.load_results(results)


@pytest.fixture(autouse=True)
def close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def legend_texts(fig: Figure) -> list[str]:
    """Every legend entry of a figure (axes, figure and subfigure legends)."""
    return [t.get_text() for legend in legends(fig) for t in legend.get_texts()]


def series_colours(fig: Figure) -> dict[str, tuple[float, float, float]]:
    """Colour of each labelled line or error-bar series in a figure, keyed by its label."""
    lines = {line.get_label(): line.get_color() for ax in fig.axes for line in ax.lines}
    bars = {c.get_label(): c.lines[0].get_color() for ax in fig.axes for c in ax.containers
            if isinstance(c, ErrorbarContainer)}
    return {label: to_rgb(colour) for label, colour in {**lines, **bars}.items() if not label.startswith("_")}


def error_bar_ends(container: ErrorbarContainer) -> list[tuple[float, float]]:
    """(low, high) of each vertical error bar of an errorbar series."""
    return [(float(seg[0][1]), float(seg[1][1])) for seg in container.lines[2][0].get_segments()]


def assert_labelled(fig: Figure) -> None:
    """Every axes has an x label and the first of each row a y label."""
    assert all(ax.get_xlabel() for ax in fig.axes)
    assert fig.axes[0].get_ylabel()


def test_palette_is_fixed_by_the_sorted_names() -> None:
    first = plots.method_palette(["nayer", "muse", "fast"])
    assert first == plots.method_palette(["fast", "muse", "nayer", "muse"])
    assert list(first) == ["fast", "muse", "nayer"] and len(set(first.values())) == 3


def test_load_keeps_finished_runs_and_budgets(res: plots.Results) -> None:
    assert len(res.runs) == 3 * 2 * 2 * 2 + 4 and res.over.empty
    assert set(res.runs["time_budget"]) == {"", "5", "10"}
    assert res.methods == ["fast", "muse", "nayer"]


def test_summarize_keeps_budgeted_runs_apart(results: Path) -> None:
    table = summarize(read_runs_csv(results))
    fast = table[(table["method"] == "fast") & (table["ratio"] == 0.5) & (table["resolution"].astype(str) == "32")]
    assert sorted(fast["time_budget"]) == ["", "10", "5"] and list(fast["seeds"]) == [2, 2, 2]


def test_old_runs_csv_gets_an_empty_time_budget(tmp_path: Path) -> None:
    pd.DataFrame([_row("muse", 0.1, "16", 0)]).drop(columns=["time_budget", "smoke", "protocol"]).to_csv(
        tmp_path / "runs.csv", index=False)
    df = read_runs_csv(tmp_path)
    assert list(df["time_budget"]) == [""] and list(summarize(df)["time_budget"]) == [""]


def test_time_accuracy_bubbles_by_ratio(res: plots.Results) -> None:
    fig = plots.make_figure("time-accuracy", res)
    texts = legend_texts(fig)
    assert texts == sorted(METHODS) + ["16px", "32px", "ratio 0.1", "ratio 0.5"]
    ax = fig.axes[0]
    assert "(s)" in ax.get_xlabel() and "synthesis + KD + eval" in ax.get_xlabel() and "(%)" in ax.get_ylabel()
    sizes = np.concatenate([c.get_sizes() for c in ax.collections])
    # bubbles by ratio (0.1 and 0.5); the budgeted runs are left to the time-budget figure
    assert sorted(set(np.round(sizes, 6))) == sorted([plots.BUBBLE_MAX / 5, plots.BUBBLE_MAX])
    assert "`plot time-budget`" in fig.subfigs[0].get_suptitle()
    muse16 = next(line for line in ax.lines if list(line.get_xdata()) == [15.0, 55.0]
                  and list(line.get_ydata()) == [accuracy("muse", 0.1, "16", 0) + 0.5,
                                                 accuracy("muse", 0.5, "16", 0) + 0.5])
    assert to_rgb(muse16.get_color()) == res.color("muse")


def test_method_colour_is_the_same_in_every_figure(res: plots.Results) -> None:
    expected = {m: to_rgb(c) for m, c in plots.method_palette(METHODS).items()}
    ratio = plots.make_figure("ratio-accuracy", res)
    curves = plots.make_figure("curves", res)
    for fig in (ratio, curves):
        by_label = series_colours(fig)
        for method in METHODS:
            assert by_label[f"{method} 16px"] == expected[method]
    samples = plots.make_figure("samples", res)
    rows = [ax for ax in samples.axes if ax.get_ylabel()]
    assert {ax.get_ylabel().split("\n")[0]: to_rgb(ax.spines["left"].get_edgecolor()) for ax in rows} == expected


def test_ratio_accuracy_log_axis_and_min_max_bars(res: plots.Results) -> None:
    fig = plots.make_figure("ratio-accuracy", res)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.1", "0.5"]
    assert legend_texts(fig) == sorted(METHODS) + ["16px", "32px"]
    assert "min–max over seeds" in fig.subfigs[0].get_suptitle()
    series = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert np.allclose(series["nayer 32px"].lines[0].get_ydata(),
                       [accuracy("nayer", r, "32", 0) + 0.5 for r in RATIOS])
    assert np.allclose(error_bar_ends(series["nayer 32px"]),
                       [(accuracy("nayer", r, "32", 0), accuracy("nayer", r, "32", 1)) for r in RATIOS])
    styles = {label: (c.lines[0].get_linestyle(), c.lines[0].get_marker()) for label, c in series.items()}
    assert styles["muse 16px"] == styles["fast 16px"] != styles["muse 32px"]
    assert series_colours(fig)["muse 16px"] == series_colours(fig)["muse 32px"] != series_colours(fig)["fast 16px"]


def test_resolution_panels_per_method(res: plots.Results) -> None:
    fig = plots.make_figure("resolution", res)
    assert len(fig.axes) == 2 * len(METHODS)
    assert_labelled(fig)
    acc_ax, time_ax = fig.axes[0], fig.axes[1]
    assert acc_ax.get_title().startswith("fast") and "accuracy" in acc_ax.get_ylabel()
    assert "time" in time_ax.get_ylabel() and "(s)" in time_ax.get_ylabel()
    bars = [c for c in acc_ax.containers if isinstance(c, BarContainer)]
    assert [b.get_label() for b in bars] == ["16px", "32px"]
    assert [round(p.get_height(), 3) for p in bars[1]] == [accuracy("fast", r, "32", 0) + 0.5 for r in RATIOS]
    assert legend_texts(fig) == ["16px", "32px"]
    assert "min–max over seeds" in fig.subfigs[0].get_suptitle()


def test_resolution_needs_two_resolutions(one_resolution: Path) -> None:
    with pytest.raises(plots.NoData, match="--resolution 16,32"):
        plots.make_figure("resolution", plots.load_results(one_resolution))


def test_curves_one_panel_per_ratio_and_budget(res: plots.Results) -> None:
    fig = plots.make_figure("curves", res)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["ratio 0.1", "ratio 0.5", "ratio ≤ 0.5, 5 s budget", "ratio ≤ 0.5, 10 s budget"]
    for ax in fig.axes[:2]:
        assert sorted(line.get_label() for line in ax.lines) == sorted(
            f"{m} {r}px" for m in METHODS for r in RESOLUTIONS)
        assert len(ax.collections) == len(ax.lines)
    assert [line.get_label() for line in fig.axes[2].lines] == ["fast 32px"]
    assert len({ax.get_ylim() for ax in fig.axes}) == 1
    assert_labelled(fig)
    assert legend_texts(fig) == sorted(METHODS) + ["16px", "32px"]


def test_mean_curve_is_over_all_seeds_on_one_grid() -> None:
    a = pd.DataFrame({"elapsed_s": [0.0, 10.0], "student_acc": [0.0, 100.0]})
    b = pd.DataFrame({"elapsed_s": [2.0, 6.0], "student_acc": [40.0, 60.0]})
    mean = plots.mean_curve([a, b], points=5)
    assert list(mean["elapsed_s"]) == [2.0, 4.0, 6.0, 8.0, 10.0]
    assert list(mean["mean"]) == [30.0, 45.0, 60.0, 70.0, 80.0]
    assert list(mean["min"]) == [20.0, 40.0, 60.0, 60.0, 60.0]
    assert list(mean["max"]) == [40.0, 50.0, 60.0, 80.0, 100.0]


def class_names_shown(fig: Figure) -> list[list[str]]:
    """The class names under each method's row of samples."""
    return [[t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes if ax.images]


def test_samples_rows_titles_and_gray(res: plots.Results) -> None:
    fig = plots.make_figure("samples", res)
    assert class_names_shown(fig) == [list(CLASSES + CLASSES)] * len(METHODS)
    rows = [ax.get_ylabel() for ax in fig.axes if ax.get_ylabel()]
    assert rows == ["fast\nratio 0.5, 16px", "muse\nratio 0.5, 16px", "nayer\nratio 0.5, 16px"]
    nayer = fig.axes[-1].images[0]
    assert nayer.get_array().shape == (8, 8 * 8 + 7) and nayer.get_cmap().name == "gray"
    assert fig.axes[0].images[0].get_array().shape == (8, 8 * 8 + 7, 3)


def test_image_strip_puts_a_white_gap_between_images() -> None:
    images = np.zeros((3, 1, 2, 2), dtype=np.uint8)
    strip = plots.image_strip(images)
    assert strip.shape == (2, 8) and strip[:, [2, 5]].tolist() == [[255, 255]] * 2 and strip.sum() == 255 * 4


def test_checked_in_layout_of_curves_and_samples(results: Path, tmp_path: Path) -> None:
    """curves/<run_id>.csv and samples/<run_id>.npz (the reference layout) are read like runs/<run_id>/ files."""
    runs = pd.read_csv(results / "runs.csv")
    runs = runs[runs["method"] == "muse"]
    runs.to_csv(tmp_path / "runs.csv", index=False)
    for folder, name in (("curves", "curve.csv"), ("samples", "samples.npz")):
        (tmp_path / folder).mkdir()
        for run_id in runs["run_id"]:
            source = results / "runs" / run_id / name
            if source.exists():
                (tmp_path / folder / f"{run_id}{source.suffix}").write_bytes(source.read_bytes())
    flat = plots.load_results(tmp_path)
    assert class_names_shown(plots.make_figure("samples", flat))[0][:4] == list(CLASSES)
    assert [len(ax.lines) for ax in plots.make_figure("curves", flat).axes] == [2, 2]


def test_pick_images_one_per_class_first() -> None:
    labels = np.array([3, 3, 1, 0, 1, 2])
    assert plots.pick_images(labels, 4) == [3, 2, 5, 0]
    assert plots.pick_images(labels, 6) == [3, 2, 5, 0, 1, 4]
    assert plots.pick_images(np.array([2, 2, 2]), 2) == [0, 1]


def test_pick_sample_run_prefers_unbudgeted_largest_ratio_seed0(res: plots.Results) -> None:
    run = plots.pick_sample_run(res.runs[res.runs["method"] == "fast"])
    assert (run["ratio"], run["seed"], run["time_budget"]) == (0.5, 0, "")


def test_reference_results(tmp_path: Path) -> None:
    ref = plots.load_results(REFERENCE)
    methods = ["cmi", "dafl", "deepinversion", "dfad", "dfq", "fast", "muse", "nayer", "zskt"]
    time_fig = plots.make_figure("time-accuracy", ref)
    assert set(methods + ["16px", "32px"]) <= set(legend_texts(time_fig))
    assert [ax.get_title() for ax in time_fig.axes] == ["bank methods", "online methods"]
    curves = plots.make_figure("curves", ref)
    titles = [ax.get_title() for ax in curves.axes]
    assert titles[:4] == ["ratio 0.02", "ratio 0.05", "ratio 0.1", "ratio 0.2"]
    assert all(" s budget" in t for t in titles[4:])
    assert [len(ax.lines) for ax in curves.axes[:4]] == [18] * 4  # 9 methods x 2 resolutions
    assert len(plots.make_figure("resolution", ref).axes) == 18  # accuracy and time, a row per method
    samples = plots.make_figure("samples", ref)
    assert class_names_shown(samples)[0] == list(DIGIT_NAMES)
    written = plots.write_one(ref, "ratio-accuracy", tmp_path / "ratio.png")
    assert written == [tmp_path / "ratio.png"] and written[0].read_bytes().startswith(PNG)


def test_cli_kinds_match_the_plot_module() -> None:
    assert cli_results.PLOT_KINDS == (*plots.KINDS, "all")


def test_cli_plot_all_with_pdf(results: Path, tmp_path: Path) -> None:
    out = ok(["plot", "all", "--results", str(results), "--out", str(tmp_path / "figs"), "--pdf"])
    names = sorted(Path(line).name for line in out.splitlines())
    assert names == sorted(n.replace(".png", ext) for n in plots.KINDS.values() for ext in (".png", ".pdf"))
    for name in plots.KINDS.values():
        assert (tmp_path / "figs" / name).read_bytes().startswith(PNG)
        assert (tmp_path / "figs" / name).with_suffix(".pdf").read_bytes().startswith(PDF)


def test_cli_plot_all_skips_kinds_without_data(one_resolution: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(["plot", "all", "--results", str(one_resolution), "--out", str(tmp_path)])
    assert code == 0, err
    notes = err.splitlines()
    assert len(notes) == 2 and notes[0].startswith("note: skipped time-budget: no time-budgeted runs")
    assert notes[1].startswith("note: skipped resolution")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        n for k, n in plots.KINDS.items() if k not in ("resolution", "time-budget"))


def test_cli_plot_one_kind_to_a_file(results: Path, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "bubbles.png"
    out = ok(["plot", "time-accuracy", "--results", str(results), "--out", str(target)])
    assert out.strip() == str(target) and target.read_bytes().startswith(PNG)
    assert sorted(p.name for p in target.parent.iterdir()) == ["bubbles.png"]


def test_cli_plot_one_kind_default_place(results: Path) -> None:
    out = ok(["plot", "samples", "--results", str(results)])
    assert out.strip() == str(results / "figures" / "samples.png")


def test_cli_old_plot_spelling(one_resolution: Path, tmp_path: Path) -> None:
    """`plot --out RESULTS --to FIGDIR` (no KIND) is `plot all`, with a deprecation note on stderr."""
    code, out, err = run_cli(["plot", "--out", str(one_resolution), "--to", str(tmp_path / "old")])
    assert code == 0, err
    note, *skipped = err.splitlines()
    assert note.startswith("note: `plot --out DIR [--to FIGDIR]` is deprecated") and "plot all --results" in note
    assert [line.split(":")[1] for line in skipped] == [" skipped time-budget", " skipped resolution"]
    made = sorted(n for k, n in plots.KINDS.items() if k not in ("resolution", "time-budget"))
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == made
    assert sorted(Path(line).name for line in out.splitlines()) == made


def test_cli_report_old_spelling(results: Path) -> None:
    code, out, err = run_cli(["report", "--out", str(results)])
    assert code == 0, err
    assert "deprecated" in err and "report --results DIR" in err and len(err.splitlines()) == 1
    assert out == ok(["report", "--results", str(results)])
    assert out.splitlines()[0].endswith("| variant | time_budget | seeds | teacher_acc | student_acc | "
                                        "student_acc_std | synth_s | kd_s | total_s | images |")


@pytest.mark.parametrize("args, pieces", [
    (["plot", "all", "--results", "{missing}"], ["no runs.csv in", "--results DIR"]),
    (["plot", "curves", "--results", "{missing}"], ["no runs.csv in", "--results DIR"]),
    (["plot", "--out", "{missing}"], ["no runs.csv in", "--results DIR"]),
    (["report", "--results", "{missing}"], ["no runs.csv in", "--results DIR"]),
    (["plot", "nope"], ["'nope' is not one of", "time-accuracy", "all"]),
    (["plot", "resolution", "--results", "{one}"], ["two or more single resolutions", "runs.csv"]),
    (["plot", "curves", "--results", "{one}", "--out", "{tmp}/x.jpg"], ["give a .png file"]),
    (["plot", "all", "--results", "{one}", "--out", "{tmp}/x.png"], ["must be a folder"]),
    (["plot", "curves", "--results", "{one}", "--to", "{tmp}"], ["--to belongs to the deprecated"]),
    (["plot", "curves", "--results", "{one}", "--methods", "muse,nope"],
     ["--methods 'muse,nope': unknown method nope", "choose from fast, muse, nayer"]),
    (["plot", "curves", "--results", "{one}", "--methods", ","], ["no method", "choose from fast, muse, nayer"]),
    (["plot", "time-budget", "--results", "{one}"], ["no time-budgeted runs", "--time-budget 5,20,60"]),
])
def test_cli_plot_errors(args: list[str], pieces: list[str], one_resolution: Path, tmp_path: Path) -> None:
    fill = {"missing": str(tmp_path / "missing"), "one": str(one_resolution), "tmp": str(tmp_path)}
    one_line_error([a.format(**fill) for a in args], *pieces)
