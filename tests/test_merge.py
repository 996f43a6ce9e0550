"""`dfkd-bench merge`: output folders built by hand (runs.csv and tiny run folders) combined by run_id."""

from __future__ import annotations

import csv
from pathlib import Path

from cli_helpers import ok, one_line_error, run_cli

from dfkd_bench.outputs import RUNS_COLUMNS

OLD_COLUMNS = [c for c in RUNS_COLUMNS if c not in ("smoke", "protocol")]


def make_folder(path: Path, runs: list[dict[str, str]], columns: list[str] = RUNS_COLUMNS,
                checkpoint: bool = False) -> Path:
    """An output folder: runs.csv with `runs` and runs/<id>/curve.csv (plus checkpoint.pt if asked)."""
    path.mkdir(parents=True, exist_ok=True)
    with open(path / "runs.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for run in runs:
            writer.writerow({"method": "fast", "dataset": "digits", "smoke": "", "protocol": "equal", **run})
    for run in runs:
        folder = path / "runs" / run["run_id"]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "curve.csv").write_text(f"round,images,elapsed_s,student_acc\n1,16,0.5,{run.get('student_acc')}\n"
                                          f"# from {path.name}\n")
        if checkpoint:
            (folder / "checkpoint.pt").write_bytes(b"ckpt")
    return path


def run(run_id: str, status: str = "ok", acc: str = "50.00") -> dict[str, str]:
    return {"run_id": run_id, "status": status, "student_acc": acc if status in ("ok", "diverged") else ""}


def read(path: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    with open(path / "runs.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return list(reader.fieldnames or []), {row["run_id"]: row for row in reader}


def origin(out: Path, run_id: str) -> str:
    return (out / "runs" / run_id / "curve.csv").read_text().splitlines()[-1]


def test_disjoint_shards_give_every_run_once(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1"), run("r2", acc="60.00")], checkpoint=True)
    b = make_folder(tmp_path / "b", [run("r3", acc="70.00"), run("r4", status="diverged", acc="nan")])
    c = make_folder(tmp_path / "c", [run("r5", status="failed")], checkpoint=True)
    out = tmp_path / "merged"
    stdout = ok(["merge", str(a), str(b), str(c), "--out", str(out)])
    assert "5 runs from 3 folders" in stdout and "0 conflicts" in stdout and "5 copied run folders" in stdout
    columns, rows = read(out)
    assert columns == RUNS_COLUMNS
    assert sorted(rows) == ["r1", "r2", "r3", "r4", "r5"]
    assert rows["r2"]["student_acc"] == "60.00" and rows["r4"]["status"] == "diverged"
    assert origin(out, "r1") == "# from a" and origin(out, "r3") == "# from b"
    # checkpoint.pt is dropped for finished runs only
    assert not (out / "runs" / "r1" / "checkpoint.pt").exists()
    assert (out / "runs" / "r5" / "checkpoint.pt").exists()
    assert not list(out.glob("*.merging")) and not list((out / "runs").glob(".*"))


def test_same_finished_result_is_merged_once(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1", acc="81.50"), run("r2")])
    b = make_folder(tmp_path / "b", [run("r1", acc="81.5"), run("r3")])
    out = tmp_path / "merged"
    stdout = ok(["merge", str(a), str(b), "--out", str(out)])
    assert "3 runs from 2 folders" in stdout and "0 conflicts" in stdout
    _, rows = read(out)
    assert sorted(rows) == ["r1", "r2", "r3"] and rows["r1"]["student_acc"] == "81.50"
    assert origin(out, "r1") == "# from a"


def test_conflict_is_reported_and_not_overwritten(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1", acc="80.00"), run("r2")])
    b = make_folder(tmp_path / "b", [run("r1", acc="75.00"), run("r3")])
    out = tmp_path / "merged"
    code, stdout, stderr = run_cli(["merge", str(a), str(b), "--out", str(out)])
    assert code == 1, (stdout, stderr)
    conflicts = [line for line in stderr.splitlines() if line.startswith("conflict")]
    assert len(conflicts) == 1 and "Traceback" not in stderr
    assert "r1" in conflicts[0] and str(a) in conflicts[0] and str(b) in conflicts[0]
    assert "80.00" in conflicts[0] and "75.00" in conflicts[0]
    assert "1 conflicts" in stdout and "3 runs from 2 folders" in stdout
    _, rows = read(out)
    assert sorted(rows) == ["r1", "r2", "r3"]  # everything else is still written
    assert rows["r1"]["student_acc"] == "80.00" and origin(out, "r1") == "# from a"

    # merging again with the other folder first: the version already in --out is kept
    code, _, stderr = run_cli(["merge", str(b), str(a), "--out", str(out)])
    assert code == 1 and "r1" in stderr
    _, rows = read(out)
    assert rows["r1"]["student_acc"] == "80.00" and origin(out, "r1") == "# from a"


def test_finished_beats_failed_and_unfinished(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1", status="failed"), run("r2", status="running")], checkpoint=True)
    b = make_folder(tmp_path / "b", [run("r1", acc="66.00"), run("r2", status="diverged", acc="nan")])
    out = tmp_path / "merged"
    stdout = ok(["merge", str(a), str(b), "--out", str(out)])
    assert "0 conflicts" in stdout
    _, rows = read(out)
    assert rows["r1"]["status"] == "ok" and rows["r1"]["student_acc"] == "66.00"
    assert rows["r2"]["status"] == "diverged"
    assert origin(out, "r1") == "# from b" and not (out / "runs" / "r1" / "checkpoint.pt").exists()
    # and the other way round: a finished run already there is not replaced by a failed one
    ok(["merge", str(a), "--out", str(out)])
    _, rows = read(out)
    assert rows["r1"]["status"] == "ok" and origin(out, "r1") == "# from b"


def test_missing_folder_or_runs_csv_is_one_line_error(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1")])
    out = tmp_path / "merged"
    one_line_error(["merge", str(a), str(tmp_path / "nope"), "--out", str(out)], str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    one_line_error(["merge", str(a), str(tmp_path / "empty"), "--out", str(out)], str(tmp_path / "empty"),
                   "runs.csv")
    assert not out.exists()  # nothing written


def test_merge_into_one_of_the_inputs(tmp_path: Path) -> None:
    a = make_folder(tmp_path / "a", [run("r1"), run("r2", status="failed")])
    b = make_folder(tmp_path / "b", [run("r2", acc="55.00"), run("r3")])
    stdout = ok(["merge", str(a), str(b), "--out", str(a)])
    assert "3 runs from 2 folders" in stdout and "2 copied run folders" in stdout
    _, rows = read(a)
    assert sorted(rows) == ["r1", "r2", "r3"] and rows["r2"]["status"] == "ok"
    assert origin(a, "r1") == "# from a" and origin(a, "r2") == "# from b" and origin(a, "r3") == "# from b"
    # idempotent: merging again changes nothing and copies nothing
    stdout = ok(["merge", str(a), str(b), "--out", str(a)])
    assert "3 runs" in stdout and "0 copied run folders" in stdout


def test_old_runs_csv_without_newer_columns_merges(tmp_path: Path) -> None:
    old = make_folder(tmp_path / "old", [run("r1"), run("r2")], columns=OLD_COLUMNS + ["note"])
    new = make_folder(tmp_path / "new", [run("r3")])
    out = tmp_path / "merged"
    ok(["merge", str(old), str(new), "--out", str(out)])
    columns, rows = read(out)
    assert columns == RUNS_COLUMNS + ["note"]
    assert sorted(rows) == ["r1", "r2", "r3"]
    assert rows["r1"]["protocol"] == "" and rows["r3"]["protocol"] == "equal"
