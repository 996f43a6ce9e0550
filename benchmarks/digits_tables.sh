#!/usr/bin/env bash
# The compact, checked-in layout of a digits suite from a merged output folder: runs.csv, every run's
# curve (curves/<run_id>.csv), the seed-0 samples of the largest ratio (samples/<run_id>.npz), the
# markdown tables and the figures. `benchmarks/digits_suite.sh` ends with it; run it alone after
# merging folders by hand:
#
#     bash benchmarks/digits_tables.sh MERGED_FOLDER OUT
set -euo pipefail
cd "$(dirname "$0")/.."
ALL=$1
OUT=$2
DFKD=${DFKD:-dfkd-bench}
PYTHON=${PYTHON:-python3}

mkdir -p "$OUT/curves" "$OUT/samples"
$PYTHON - "$ALL" "$OUT" <<'PY'
"""Copy runs.csv, every curve and the seed-0 samples of each method's largest ratio into the compact layout."""
import shutil
import sys
from pathlib import Path

import pandas as pd

work, out = Path(sys.argv[1]), Path(sys.argv[2])
runs = pd.read_csv(work / "runs.csv", dtype=str)
shutil.copy(work / "runs.csv", out / "runs.csv")
for run_id in runs["run_id"]:
    curve = work / "runs" / run_id / "curve.csv"
    if curve.exists():
        shutil.copy(curve, out / "curves" / f"{run_id}.csv")
plain = runs[runs["time_budget"].isna() & (runs["status"] == "ok") & (runs["seed"] == "0")]
largest = plain[pd.to_numeric(plain["ratio"]) == pd.to_numeric(plain["ratio"]).max()]
for run_id in largest["run_id"]:
    samples = work / "runs" / run_id / "samples.npz"
    if samples.exists():
        shutil.copy(samples, out / "samples" / f"{run_id}.npz")
PY

{
    echo "# digits suite: student accuracy (%), mean ± std (seeds)"
    echo
    $DFKD table --results "$OUT" --rows method,resolution --cols ratio
    echo
    echo "# total seconds (synthesis + KD + evaluation), mean ± std (seeds)"
    echo
    $DFKD table --results "$OUT" --rows method,resolution --cols ratio --metric total_s
    echo
    echo "# online methods: the equal image budget (budget=images) against their papers' step counts"
    echo "# (budget=steps, the digits presets' paper_steps; ratio only names those runs), student accuracy (%)"
    echo
    $DFKD table --results "$OUT" --rows method,resolution,budget --cols ratio --methods dafl,dfq,zskt,dfad
    echo
    echo "# equal time: student accuracy (%) per budget of synthesis + KD seconds (ratio 1.0 as a cap)"
    echo
    $DFKD table --results "$OUT" --rows method --cols time_budget
    echo
    echo "# equal time: synthetic images made within each budget"
    echo
    $DFKD table --results "$OUT" --rows method --cols time_budget --metric n_synthetic
} > "$OUT/tables.md"
$DFKD plot all --results "$OUT" --out "$OUT/figures"
