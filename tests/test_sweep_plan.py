"""`sweep --dry-run`: every run of a grid with its id, status (done, partial, to do) and estimated cost."""

from __future__ import annotations

import csv
from pathlib import Path

from cli_helpers import ok
from dfkd_bench.outputs import RUNS_COLUMNS
from dfkd_bench.grid import plan
from dfkd_bench.sweep import load_sweep


def test_plan_reports_status_and_estimates_from_finished_runs(tmp_path: Path) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text('dataset = "digits"\nmethods = ["fast"]\nratios = [0.1, 0.5]\nseeds = [0, 1]\n')
    configs = load_sweep(spec)
    ids = [p.resolved.run_id for p in plan(configs, tmp_path / "out")]
    assert len(ids) == 4 and len(set(ids)) == 4
    out = tmp_path / "out"
    (out / "runs" / ids[1]).mkdir(parents=True)
    (out / "runs" / ids[1] / "checkpoint.pt").write_bytes(b"x")
    done = plan(configs[:1], out)[0].resolved
    with open(out / "runs.csv", "w", newline="") as fh:  # one finished run: 144 images in 72 s
        writer = csv.DictWriter(fh, fieldnames=RUNS_COLUMNS)
        writer.writeheader()
        writer.writerow({**{c: "" for c in RUNS_COLUMNS}, "run_id": ids[0], "method": "fast", "dataset": "digits",
                         "status": "ok", "total_s": "72", "n_synthetic": str(done.n_synthetic)})
    planned = plan(configs, out)
    assert [p.status for p in planned] == ["done", "partial", "to do", "to do"]
    assert planned[0].estimate_s is None
    for p in planned[1:]:
        assert abs(p.estimate_s - 72 / done.n_synthetic * p.resolved.n_synthetic) < 1e-6
    printed = ok(["sweep", str(spec), "--out", str(out), "--dry-run"])
    assert ids[2] in printed and "to do" in printed and "partial" in printed
    assert "4 runs: 1 done, 3 to do or partial" in printed
    assert not (out / "runs" / ids[2]).exists()  # nothing ran
