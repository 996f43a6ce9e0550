#!/usr/bin/env bash
# Regenerates results/digits/ (the digits suite: configs/digits.toml and configs/digits_equal_time.toml),
# its tables and its figures, from scratch:
#
#     bash benchmarks/digits_suite.sh [OUT]        # OUT defaults to results/digits
#
# Each sweep runs as two shards in parallel, one CPU thread each, every shard in its own folder under
# OUT.work/ (as a job array would); `dfkd-bench merge` combines them. The checked-in folder keeps
# runs.csv, every run's curve (curves/<run_id>.csv), the seed-0 samples of the largest ratio
# (samples/<run_id>.npz), the markdown tables and the figures; the full run folders stay in OUT.work/.
# Re-running continues where it stopped: finished runs are skipped, partial ones resume.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-results/digits}
WORK=${OUT}.work
DFKD=${DFKD:-dfkd-bench}
PYTHON=${PYTHON:-python3}
export OMP_NUM_THREADS=1

# the teacher first, so that the parallel shards find it cached instead of each training it
$DFKD teachers | grep -q "digits_resnet8 " || $DFKD teacher train --dataset digits --quiet

for spec in configs/digits.toml configs/digits_equal_time.toml; do
    $DFKD sweep "$spec" --shard 1/2 --out "$WORK/shard1" --quiet &
    first=$!
    $DFKD sweep "$spec" --shard 2/2 --out "$WORK/shard2" --quiet
    wait "$first"
done
$DFKD merge "$WORK/shard1" "$WORK/shard2" --out "$WORK/all"

mkdir -p "$OUT/curves" "$OUT/samples"
$PYTHON - "$WORK/all" "$OUT" <<'PY'
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
    echo "# equal time: student accuracy (%) per budget of synthesis + KD seconds (ratio 1.0 as a cap)"
    echo
    $DFKD table --results "$OUT" --rows method --cols time_budget
    echo
    echo "# equal time: synthetic images made within each budget"
    echo
    $DFKD table --results "$OUT" --rows method --cols time_budget --metric n_synthetic
} > "$OUT/tables.md"
$DFKD plot all --results "$OUT" --out "$OUT/figures"
