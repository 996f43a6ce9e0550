"""The checked-in reference results (curves/<run_id>.csv layout) feed the time-to-accuracy column."""

from __future__ import annotations

from pathlib import Path

from dfkd_bench.report import read_runs_csv, summarize
from dfkd_bench.report.tables import add_time_to_accuracy

REFERENCE = Path(__file__).parent.parent / "results" / "reference" / "digits_quick"


def test_time_to_accuracy_reads_the_reference_curves() -> None:
    df = add_time_to_accuracy(read_runs_csv(REFERENCE), REFERENCE, 95)
    table = summarize(df)
    row = table[(table["method"] == "muse") & (table["ratio"] == 0.5) & (table["resolution"].astype(str) == "16")]
    assert len(row) == 1 and int(row["t95_reached"].iloc[0]) == 3 and 5 < float(row["t95_s"].iloc[0]) < 30
