#!/usr/bin/env bash
# Regenerates results/digits/ (the digits suite: the shipped grids digits, digits_equal_time and
# digits_online_steps, in dfkd_bench/configs/),
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
export OMP_NUM_THREADS=1 DFKD PYTHON

# the teacher first, so that the parallel shards find it cached instead of each training it
$DFKD teachers | grep -q "digits_resnet8 " || $DFKD teacher train --dataset digits --quiet

for spec in digits digits_equal_time digits_online_steps; do
    $DFKD sweep "$spec" --shard 1/2 --out "$WORK/shard1" --quiet &
    first=$!
    $DFKD sweep "$spec" --shard 2/2 --out "$WORK/shard2" --quiet
    wait "$first"
done
$DFKD merge "$WORK/shard1" "$WORK/shard2" --out "$WORK/all"

bash benchmarks/digits_tables.sh "$WORK/all" "$OUT"
