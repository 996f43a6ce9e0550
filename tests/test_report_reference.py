"""The checked-in digits results (curves/<run_id>.csv layout) feed the time-to-accuracy column."""

from __future__ import annotations

from pathlib import Path

from dfkd_bench.report import read_runs_csv, summarize
from dfkd_bench.report.tables import add_time_to_accuracy

REFERENCE = Path(__file__).parent.parent / "results" / "digits"


def test_time_to_accuracy_reads_the_reference_curves() -> None:
    df = add_time_to_accuracy(read_runs_csv(REFERENCE), REFERENCE, 95)
    table = summarize(df)
    at = table[(table["ratio"] == 0.2) & (table["time_budget"] == "")].set_index(["method", "resolution"])
    muse = at.loc[("muse", "16")]
    assert int(muse["t95_reached"]) == 3 and 10 < float(muse["t95_s"]) <= float(muse["total_s"])
    assert int(at.loc[("fast", "16"), "t95_reached"]) == 2  # one seed ends below 95%: counted, not averaged in
