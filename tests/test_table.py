"""`dfkd-bench table`: pivots of runs.csv with mean ± std (n) cells, bold best cells, left-out counts,
time-to-accuracy and published reference rows; from a hand-made runs.csv (no torch, no training)."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest

from cli_helpers import ok, one_line_error, run_cli

# (method, ratio) -> three seeds of (student_acc, total_s)
RESULTS = {
    ("fast", 0.1): [(90.0, 100.0), (91.0, 110.0), (92.0, 120.0)],    # 91.0 ± 1.0, 110.0 ± 10.0
    ("fast", 0.5): [(94.0, 500.0), (94.5, 500.0), (95.5, 500.0)],    # 94.7 ± 0.8, 500.0 ± 0.0
    ("nayer", 0.1): [(92.0, 200.0), (92.0, 200.0), (92.0, 200.0)],   # 92.0 ± 0.0, 200.0 ± 0.0
    ("nayer", 0.5): [(93.0, 400.0), (94.0, 410.0), (95.0, 420.0)],   # 94.0 ± 1.0, 410.0 ± 10.0
}


def _row(method: str, ratio: float, seed: int, acc: str, total: str, status: str = "ok", smoke: str = "0",
         teacher: str = "resnet34", student: str = "resnet18") -> dict:
    return {"run_id": f"{method}-r{ratio}-s{seed}", "method": method, "dataset": "cifar10", "teacher": teacher,
            "student": student, "ratio": ratio, "resolution": 32, "seed": seed, "n_synthetic": 1000,
            "teacher_acc": 95.7, "student_acc": acc, "synth_s": "", "kd_s": "", "eval_s": "", "total_s": total,
            "peak_mem_mb": "", "device": "cpu", "status": status, "error": "", "started_at": "", "version": "0",
            "smoke": smoke, "protocol": ""}


def write_results(folder: Path, teacher: str = "resnet34", student: str = "resnet18") -> Path:
    rows = []
    for (method, ratio), runs in RESULTS.items():
        for seed, (acc, total) in enumerate(runs):
            rows.append(_row(method, ratio, seed, str(acc), str(total), teacher=teacher, student=student))
            curve = folder / "runs" / f"{method}-r{ratio}-s{seed}" / "curve.csv"
            curve.parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"elapsed_s": [total / 2, total], "student_acc": [acc - 5, acc]}).to_csv(curve, index=False)
    rows.append(_row("fast", 0.1, 9, "99.0", "1.0", smoke="1", teacher=teacher, student=student))
    rows.append(_row("nayer", 0.5, 3, "", "", status="failed", teacher=teacher, student=student))
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(folder / "runs.csv", index=False)
    return folder


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_results(tmp_path_factory.mktemp("table") / "results")


def md_cells(out: str) -> dict[str, list[str]]:
    """Markdown table rows keyed by their first cell."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines)}


def test_markdown_accuracy_cells_bold_and_left_out(results: Path) -> None:
    out = ok(["table", "--results", str(results)])
    table = md_cells(out)
    assert table["method"] == ["ratio=0.1", "ratio=0.5"]
    assert table["fast"] == ["91.0 ± 1.0 (3)", "**94.7 ± 0.8 (3)**"]
    assert table["nayer"] == ["**92.0 ± 0.0 (3)**", "94.0 ± 1.0 (3)"]
    assert out.rstrip().splitlines()[-1] == "left out: 1 smoke, 1 failed"
    assert "99.0" not in out


def test_seconds_lowest_is_best(results: Path) -> None:
    table = md_cells(ok(["table", "--results", str(results), "--metric", "total_s"]))
    assert table["fast"] == ["**110.0 ± 10.0 (3)**", "500.0 ± 0.0 (3)"]
    assert table["nayer"] == ["200.0 ± 0.0 (3)", "**410.0 ± 10.0 (3)**"]


def test_latex_bold(results: Path) -> None:
    out = ok(["table", "--results", str(results), "--format", "latex"])
    assert r"\begin{tabular}{lrr}" in out
    assert r"fast & 91.0 $\pm$ 1.0 (3) & \textbf{94.7 $\pm$ 0.8 (3)} \\" in out
    assert r"nayer & \textbf{92.0 $\pm$ 0.0 (3)} & 94.0 $\pm$ 1.0 (3) \\" in out
    assert out.count(r"\textbf") == 2
    assert out.rstrip().splitlines()[-1] == "% left out: 1 smoke, 1 failed"


def test_csv_parses(results: Path) -> None:
    code, out, err = run_cli(["table", "--results", str(results), "--format", "csv", "--metric", "total_s"])
    assert code == 0, err
    df = pd.read_csv(io.StringIO(out))
    assert list(df.columns) == ["method", "ratio=0.1", "ratio=0.5"]
    assert df.set_index("method").loc["nayer", "ratio=0.5"] == "410.0 ± 10.0 (3)"
    assert "**" not in out
    assert err.strip() == "left out: 1 smoke, 1 failed"


def test_multi_level_and_single_seed(results: Path) -> None:
    out = ok(["table", "--results", str(results), "--rows", "method,ratio", "--cols", "seed"])
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | ratio | seed=0 | seed=1 | seed=2 |"
    assert "| fast | 0.1 | 90.0 ± — (1) | 91.0 ± — (1) | 92.0 ± — (1) |" in lines
    assert "| fast | 0.5 | **94.0 ± — (1)** | **94.5 ± — (1)** | **95.5 ± — (1)** |" in lines
    two_cols = md_cells(ok(["table", "--results", str(results), "--rows", "method", "--cols", "ratio,resolution"]))
    assert two_cols["method"] == ["ratio=0.1, resolution=32", "ratio=0.5, resolution=32"]


def test_time_to_accuracy(results: Path) -> None:
    table = md_cells(ok(["table", "--results", str(results), "--metric", "t95_s"]))
    assert table["fast"] == ["—", "500.0 ± — (1)"]
    assert table["nayer"] == ["—", "**420.0 ± — (1)**"]
    assert md_cells(ok(["table", "--results", str(results), "--metric", "t95_s", "--threshold", "95"])) == table


def test_bad_columns_and_metric(results: Path) -> None:
    one_line_error(["table", "--results", str(results), "--rows", "method,bogus", "--cols", "nope"],
                   "bogus", "nope", "method")
    one_line_error(["table", "--results", str(results), "--metric", "accuracy"], "accuracy", "student_acc")
    one_line_error(["table", "--results", str(results), "--rows", "ratio"], "ratio", "--rows", "--cols")
    one_line_error(["table", "--results", str(results / "missing")], "no runs.csv")


def test_published_rows(results: Path) -> None:
    out = ok(["table", "--results", str(results), "--published"])
    table = md_cells(out)
    assert table["dafl (published)"] == ["92.2 / 93.3", "92.2 / 93.3"]
    assert table["fast-10 (published)"] == ["94.0", "94.0"]
    assert table["teacher (published)"] == ["95.7", "95.7"]
    assert table["fast"] == ["91.0 ± 1.0 (3)", "**94.7 ± 0.8 (3)**"]  # published numbers are never "best"
    assert "81.1" not in out  # dafl with a vgg11 teacher: another pair
    by_pair = md_cells(ok(["table", "--results", str(results), "--published", "--cols", "teacher"]))
    assert by_pair["dfq (published)"] == ["94.6"]
    assert "(published)" not in ok(["table", "--results", str(results), "--published", "--metric", "total_s"])


def test_published_other_pair_only(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "vgg", teacher="vgg11")
    table = md_cells(ok(["table", "--results", str(folder), "--published"]))
    assert table["dafl (published)"] == ["81.1", "81.1"]
    assert table["fast-10 (published)"] == ["90.5", "90.5"]
    assert table["teacher (published)"] == ["92.2", "92.2"]


@pytest.mark.parametrize("module", ["pivot", "tables", "footnotes", "latex"])
def test_table_modules_import_no_torch(module: str) -> None:
    """Dependency rule: report/ imports no torch (checked on the source; the package root imports torch)."""
    import ast
    import importlib

    source = Path(importlib.import_module(f"dfkd_bench.report.{module}").__file__).read_text()
    tree = ast.parse(source)
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [("." * n.level) + (n.module or "") for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert not [n for n in names if "torch" in n]
    assert {n for n in names if n.startswith(".")} <= {"..errors", ".", ".tables", ".footnotes", ".latex"}


def test_time_budgeted_runs_never_share_a_cell_with_unbudgeted_ones(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "results")
    df = pd.read_csv(folder / "runs.csv", dtype=str)
    budgeted = [{**_row("fast", 1.0, seed, acc, "21.0"), "run_id": f"fast-b{budget}-s{seed}", "time_budget": budget}
                for budget, accs in (("10", ["80.0", "82.0"]), ("20", ["90.0", "94.0"]))
                for seed, acc in enumerate(accs)]
    pd.concat([df, pd.DataFrame(budgeted)]).to_csv(folder / "runs.csv", index=False)
    by_ratio = ok(["table", "--results", str(folder)])
    assert "ratio=1" not in by_ratio and "4 time-budgeted" in by_ratio
    assert md_cells(by_ratio)["fast"][:2] == ["91.0 ± 1.0 (3)", "**94.7 ± 0.8 (3)**"]
    by_budget = md_cells(ok(["table", "--results", str(folder), "--cols", "time_budget"]))
    assert by_budget["fast"] == ["**81.0 ± 1.4 (2)**", "**92.0 ± 2.8 (2)**"]  # alone in each column
    assert "nayer" not in by_budget


def test_images_made_is_a_metric_where_more_is_better(tmp_path: Path) -> None:
    folder = write_results(tmp_path / "results")
    df = pd.read_csv(folder / "runs.csv", dtype=str)
    df.loc[df["method"] == "fast", "n_synthetic"] = "2000"
    df.to_csv(folder / "runs.csv", index=False)
    table = md_cells(ok(["table", "--results", str(folder), "--metric", "n_synthetic"]))
    assert table["fast"][0] == "**2000.0 ± 0.0 (3)**" and table["nayer"][0] == "1000.0 ± 0.0 (3)"
