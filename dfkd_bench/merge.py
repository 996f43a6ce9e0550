"""Combine output folders (e.g. written by sweep shards on different machines) into one, by run_id.

`merge_outputs(inputs, out)` reads every input's runs.csv (and --out's own, when it already has one),
picks one row per run_id, copies the chosen run folders runs/<run_id>/ into `out` and writes one
runs.csv there atomically. Rules, per run_id:

* finished (status ok or diverged) beats unfinished or failed, wherever it comes from;
* finished in two folders with the same status and student_acc: merged silently (the first is kept);
* finished in two folders with different results: a *conflict*. The version already in `out` is kept
  (or, where `out` has none, the first input's), the other folder's run folder is not copied, and the
  conflict is reported. Everything else is still merged and written: a conflict never blocks the
  rest of the merge, and the command exits with status 1 after the summary so that scripts notice;
* neither finished: the first one seen is kept (`out`'s own first, then the inputs in order).

Precedence order is: `out`'s existing runs.csv, then the inputs in the order given (an input that is
`out` itself counts once, as `out`). Columns of the merged runs.csv are the union: RUNS_COLUMNS first,
in their order, then any other column in the order met, so older files without newer columns
(`smoke`, `protocol`) merge with empty values there. Run folders are copied with shutil.copytree into
a temporary name and then swapped in; `checkpoint.pt` is skipped for finished runs. A missing input
folder, or one without runs.csv, is a UserError raised before anything is written.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .outputs import FINISHED, RUNS_COLUMNS, write_runs_csv



@dataclass
class Conflict:
    run_id: str
    kept_dir: Path
    other_dir: Path
    kept_status: str
    other_status: str
    kept_acc: str
    other_acc: str

    def line(self) -> str:
        return (f"conflict: {self.run_id}: kept {self.kept_dir} ({self.kept_status} {self.kept_acc or '-'}), "
                f"not {self.other_dir} ({self.other_status} {self.other_acc or '-'})")


@dataclass
class MergeResult:
    out: Path
    rows: dict[str, dict[str, str]]
    columns: list[str]
    folders: int
    copied: int
    conflicts: list[Conflict] = field(default_factory=list)

    def summary(self) -> str:
        return (f"merged {len(self.rows)} runs from {self.folders} folders into {self.out}: "
                f"{len(self.conflicts)} conflicts, {self.copied} copied run folders")


def _finished(row: dict[str, str]) -> bool:
    return (row.get("status") or "") in FINISHED


def _same_result(a: dict[str, str], b: dict[str, str]) -> bool:
    if (a.get("status") or "") != (b.get("status") or ""):
        return False
    x, y = (a.get("student_acc") or "").strip(), (b.get("student_acc") or "").strip()
    if x == y:
        return True
    try:
        fx, fy = float(x), float(y)
    except ValueError:
        return False
    return (math.isnan(fx) and math.isnan(fy)) or fx == fy


def _read(folder: Path) -> tuple[list[str], dict[str, dict[str, str]]]:
    path = folder / "runs.csv"
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            columns = list(reader.fieldnames or [])
            if "run_id" not in columns:
                raise UserError(f"{path} has no run_id column; not a dfkd-bench runs.csv")
            rows = {}
            for row in reader:
                run_id = (row.get("run_id") or "").strip()
                if run_id:
                    rows[run_id] = {k: ("" if v is None else v) for k, v in row.items() if k is not None}
            return columns, rows
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"cannot read {path}: {exc}") from None


def _safe_run_id(run_id: str) -> bool:
    return run_id not in (".", "..") and "/" not in run_id and "\\" not in run_id and Path(run_id).name == run_id


def _copy_run(src: Path, dest: Path, finished: bool) -> None:
    """copytree src -> dest (replacing it), without checkpoint.pt when the run is finished."""

    def ignore(directory: str, names: list[str]) -> list[str]:
        if finished and Path(directory) == src and "checkpoint.pt" in names:
            return ["checkpoint.pt"]
        return []

    tmp = dest.parent / f".{dest.name}.merging"
    if tmp.exists():
        shutil.rmtree(tmp)
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src, tmp, ignore=ignore)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)


def merge_outputs(inputs: list[str | Path], out: str | Path) -> MergeResult:
    """Merge the output folders `inputs` into `out` (see the module docstring for the rules)."""
    if not inputs:
        raise UserError("merge needs at least one input folder")
    out = Path(out)
    out_key = out.resolve()
    # Validate and read everything before writing anything.
    sources: list[tuple[Path, list[str], dict[str, dict[str, str]]]] = []
    seen: set[Path] = set()
    for raw in inputs:
        folder = Path(raw)
        if not folder.is_dir():
            raise UserError(f"input folder {folder} does not exist (or is not a folder)")
        if not (folder / "runs.csv").is_file():
            raise UserError(f"input folder {folder} has no runs.csv; not a dfkd-bench output folder")
        key = folder.resolve()
        if key in seen or key == out_key:
            continue
        seen.add(key)
        sources.append((folder, *_read(folder)))
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if (out / "runs.csv").is_file():
        sources.insert(0, (out, *_read(out)))
    n_folders = len({Path(p).resolve() for p in inputs})

    columns = list(RUNS_COLUMNS)
    for _, cols, _ in sources:
        columns += [c for c in cols if c not in columns]

    chosen: dict[str, tuple[Path, dict[str, str]]] = {}
    conflicts: list[Conflict] = []
    for folder, _, rows in sources:
        for run_id, row in rows.items():
            if run_id not in chosen:
                chosen[run_id] = (folder, row)
                continue
            kept_dir, kept = chosen[run_id]
            if not _finished(kept):
                if _finished(row):
                    chosen[run_id] = (folder, row)
            elif _finished(row) and not _same_result(kept, row):
                conflicts.append(Conflict(run_id, kept_dir, folder, kept.get("status", ""), row.get("status", ""),
                                          kept.get("student_acc", ""), row.get("student_acc", "")))

    copied = 0
    for run_id, (folder, row) in chosen.items():
        if folder.resolve() == out_key or not _safe_run_id(run_id):
            continue
        src = folder / "runs" / run_id
        if src.is_dir():
            _copy_run(src, out / "runs" / run_id, _finished(row))
            copied += 1

    merged = {run_id: {c: row.get(c, "") or "" for c in columns} for run_id, (_, row) in chosen.items()}
    write_runs_csv(out, merged.values(), columns)
    return MergeResult(out, merged, columns, n_folders, copied, conflicts)
