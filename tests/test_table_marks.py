"""Marked cells in `table`, `report` and the terminal table: † near chance with the images and student steps
the runs had, ‡ for equal-time cells a run overran (never an accuracy, never bold), — for one seed's spread;
on a runs.csv with the issue-17 columns and on an older one without them (hand-made files, no training)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import ok, one_line_error, run_cli
from dfkd_bench.cli.run import print_table
from dfkd_bench.outputs import RUNS_COLUMNS
from dfkd_bench.report.footnotes import chance_level, overran
from dfkd_bench.report.tables import runs_frame
from test_table import md_cells


ISSUE_17_COLUMNS = ("kd_steps", "paper_kd_steps", "rounds", "round_images", "tolerance_s", "unit_s", "num_classes")


def _run(method: str, budget: str, seed: int, acc: str, synth: float, kd: float, **extra: object) -> dict:
    """A digits run under a `budget`-second time budget (empty: none) with the new columns filled."""
    row = {c: "" for c in RUNS_COLUMNS}
    row.update(run_id=f"{method}-b{budget}-s{seed}-abc", method=method, dataset="digits", teacher="t", student="s",
               ratio="1.0", resolution="32", seed=str(seed), n_synthetic="64", teacher_acc="99.0", student_acc=acc,
               synth_s=f"{synth:.2f}", kd_s=f"{kd:.2f}", eval_s="0.1", total_s=f"{synth + kd + 0.1:.2f}",
               status="ok", time_budget=budget, budget="images", kd_steps="40", rounds="5", round_images="13",
               tolerance_s="0.25" if budget else "", num_classes="10")
    row.update({k: str(v) for k, v in extra.items()})
    return row


def _equal_time_rows() -> list[dict]:
    return [
        # dfad: at chance (10.1 on 10 classes) with few images and steps against its paper's 50000
        *(_run("dfad", "5", s, acc, 2.0, 2.9, n_synthetic=n, kd_steps=k, paper_kd_steps="50000")
          for s, (acc, n, k) in enumerate([("9.8", 64, 40), ("10.1", 72, 45), ("10.4", 80, 50)])),
        # deepinversion: its smallest unit did not fit 5 s; an accuracy written by mistake is never shown
        *(_run("deepinversion", "5", s, "77.7", 0.9, 0.0, status="over_budget", unit_s="0.90", n_synthetic=9999)
          for s in range(2)),
        # fast: two seeds kept 5 s, the third ran 6.1 s: the cell is not an equal-time cell
        _run("fast", "5", 0, "60.0", 3.0, 1.9), _run("fast", "5", 1, "62.0", 3.0, 2.0),
        _run("fast", "5", 2, "", 4.0, 2.1, status="over_budget"),
        _run("nayer", "5", 0, "70.0", 3.0, 2.0),                      # one seed: no spread
        _run("deepinversion", "60", 0, "97.0", 40.0, 19.0),           # a budget it kept
    ]


def _write(folder: Path, rows: list[dict], drop: tuple[str, ...] = ()) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).drop(columns=list(drop)).to_csv(folder / "runs.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def equal_time(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("marks") / "results", _equal_time_rows())


def _footnotes(out: str, mark: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith(mark)]


def test_equal_time_table_marks_chance_and_over_budget(equal_time: Path) -> None:
    out = ok(["table", "--results", str(equal_time), "--cols", "time_budget"])
    table = md_cells(out)
    assert table["method"] == ["time_budget=5", "time_budget=60"]
    assert table["dfad"] == ["10.1† ± 0.3 (3)", "—"]
    assert table["deepinversion"] == ["—‡", "**97.0 ± — (1)**"]
    assert table["fast"] == ["—‡", "—"]
    assert table["nayer"] == ["**70.0 ± — (1)**", "—"]
    assert "77.7" not in out and "60.0" not in out and "61.0" not in out

    [chance] = _footnotes(out, "†")
    assert chance.startswith("† dfad at time_budget=5: within 2 points of chance (10%)")
    assert "64–80 images and 40–50 student steps (budget=images, time budget 5 s)" in chance
    assert "its reference trains 50000 student steps (budget=steps)" in chance
    deepinversion, fast, rule = _footnotes(out, "‡")
    assert deepinversion.startswith("‡ deepinversion, over its time budget at time_budget=5")
    assert "2 of 2 runs needed 0.90 s for their smallest unit of work" in deepinversion
    assert "1 of 3 runs ran 6.1 s against 5 s + 0.25 s" in fast
    assert "every run kept its budget" in rule and "recorded no tolerance" not in rule
    assert out.rstrip().splitlines()[-1] == "left out: none"


def test_over_budget_cells_are_never_a_number_nor_best(equal_time: Path) -> None:
    images = md_cells(ok(["table", "--results", str(equal_time), "--cols", "time_budget", "--metric", "n_synthetic"]))
    assert images["deepinversion"][0] == "—‡" and images["fast"][0] == "—‡"  # 9999 images: not shown, not best
    assert images["dfad"][0] == "**72.0 ± 8.0 (3)**"
    seconds = ok(["table", "--results", str(equal_time), "--cols", "time_budget", "--metric", "total_s"])
    assert md_cells(seconds)["fast"][0] == "—‡" and not _footnotes(seconds, "†")  # chance is for accuracy only


def test_latex_and_csv_carry_the_marks(equal_time: Path) -> None:
    tex = ok(["table", "--results", str(equal_time), "--cols", "time_budget", "--format", "latex"])
    assert r"dfad & 10.1$^\dagger$ $\pm$ 0.3 (3) & -- \\" in tex
    assert r"deepinversion & --$^\ddagger$ & \textbf{97.0 $\pm$ -- (1)} \\" in tex
    assert r"{\footnotesize $^\dagger$ dfad at time\_budget=5: within 2 points" in tex
    code, out, err = run_cli(["table", "--results", str(equal_time), "--cols", "time_budget", "--format", "csv"])
    assert code == 0, err
    assert pd.read_csv(io.StringIO(out)).set_index("method").loc["fast", "time_budget=5"] == "—‡"
    assert [line[0] for line in err.splitlines()] == ["†", "‡", "‡", "‡", "l"]


def test_report_marks_and_one_seed_spread(equal_time: Path) -> None:
    out = ok(["report", "--results", str(equal_time)])
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines() if line.startswith("| ")]
    header = rows[0]
    by_method = {(r[0], r[header.index("time_budget")]): dict(zip(header, r)) for r in rows[1:]}
    assert by_method[("dfad", "5")]["student_acc"] == "10.10†"
    assert by_method[("fast", "5")]["student_acc"] == "—‡" and by_method[("fast", "5")]["seeds"] == "3"
    assert by_method[("deepinversion", "5")]["student_acc"] == "—‡"
    assert by_method[("nayer", "5")]["student_acc_std"] == "—"
    assert by_method[("deepinversion", "60")]["student_acc"] == "97.00"
    assert len(_footnotes(out, "†")) == 1 and len(_footnotes(out, "‡")) == 3
    code, csv_out, err = run_cli(["report", "--results", str(equal_time), "--format", "csv"])
    assert code == 0 and len(pd.read_csv(io.StringIO(csv_out))) == 5
    assert [line[0] for line in err.splitlines()] == ["†", "‡", "‡", "‡"]


def test_terminal_table_marks_and_footnotes() -> None:
    rows = _equal_time_rows()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        print_table(rows)
    text = out.getvalue()
    assert "10.10†" in text and "—‡" in text and "77.70" not in text
    assert any(line.startswith("† dfad at ratio=1, resolution=32, time_budget=5") for line in text.splitlines())
    assert any(line.startswith("‡ fast, over its time budget") for line in text.splitlines())


def test_old_file_marks_chance_from_the_dataset_and_budget_from_its_seconds(tmp_path: Path) -> None:
    """A runs.csv from before issue 17: no kd_steps, paper_kd_steps, tolerance_s, unit_s or num_classes."""
    rows = [_run("dfad", "", s, acc, 2.0, 10.0, n_synthetic=n) for s, (acc, n) in enumerate([("9.6", 29), ("9.9", 58)])]
    rows += [_run("deepinversion", "5", s, "96.5", 100.0, 25.0) for s in range(2)]   # ran 125 s "within" 5 s
    rows += [_run("fast", "5", 0, "15.0", 3.0, 2.2)]                                  # 5.2 s: within 5% of 5 s
    rows += [_run("dfad", "", 0, "9.9", 2.0, 10.0, dataset="mystery", run_id="m-s0", teacher="u")]
    folder = _write(tmp_path / "old", rows, drop=ISSUE_17_COLUMNS)

    by_ratio = ok(["table", "--results", str(folder), "--rows", "method,dataset"])
    assert "| dfad | digits | 9.8† ± 0.2 (2) |" in by_ratio and "| dfad | mystery | **9.9 ± — (1)** |" in by_ratio
    [chance] = _footnotes(by_ratio, "†")  # the unknown dataset has no chance level: no mark
    assert chance.startswith("† dfad, dataset=digits at ratio=1: within 2 points of chance (10%)")
    assert chance.endswith("its runs had 29–58 images (budget=images); their student steps and the reference's "
                           "step count were not recorded.")
    by_budget = ok(["table", "--results", str(folder), "--cols", "time_budget"])
    assert md_cells(by_budget)["deepinversion"] == ["—‡"] and md_cells(by_budget)["fast"] == ["**15.0 ± — (1)**"]
    assert "2 of 2 runs ran 125.0 s against 5 s + 0.25 s" in by_budget
    assert "runs that recorded no tolerance are given 5% of the budget" in by_budget


def test_chance_follows_the_class_count() -> None:
    runs = runs_frame([_run("dfad", "", 0, "2.5", 1, 1, dataset="cifar100", num_classes="100"),
                       _run("dfad", "", 1, "2.5", 1, 1, dataset="cifar100", num_classes="")])
    assert chance_level(runs, lambda name: {"cifar100": 100}.get(name)) == pytest.approx(1.0)
    assert chance_level(runs) is None  # one run's class count unknown and no lookup
    mixed = runs_frame([_run("a", "", 0, "5", 1, 1, num_classes="10"), _run("a", "", 1, "5", 1, 1, num_classes="100")])
    assert chance_level(mixed) is None


def test_overran_reads_status_and_seconds() -> None:
    runs = runs_frame([_run("a", "5", 0, "1", 3.0, 2.30), _run("a", "5", 1, "1", 3.0, 2.20),
                       _run("a", "5", 2, "", 1.0, 1.0, status="over_budget"), _run("a", "", 3, "1", 90.0, 9.0)])
    assert list(overran(runs)) == [True, False, True, False]


def test_table_keeps_only_the_methods_asked_for(equal_time: Path) -> None:
    folder = equal_time
    text = ok(["table", "--results", str(folder), "--cols", "time_budget", "--methods", "dfad"])
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert rows and all(line.startswith("| dfad ") for line in rows)
    one_line_error(["table", "--results", str(folder), "--methods", "dfad,nope"], "nope", "dfad")
