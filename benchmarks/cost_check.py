"""Predicted against measured synthesis + KD seconds on this machine: `dfkd-bench calibrate`, the dry-run
predictions (`run --dry-run --format json`, each plan's "cost") of the README's first command and the
ratio-0.1 nine-method digits run, then both commands run, back to back, one thread each.

    .venv/bin/python benchmarks/cost_check.py [--out DIR]      # calibrate, predict, run, compare
    .venv/bin/python benchmarks/cost_check.py --compare DIR    # the tables of a finished check

DIR keeps the plans (readme_plan.json, nine_plan.json), the rows (readme_runs.csv, nine_runs.csv), the
calibration's output and a log with the machine's load (`uptime`) at each step. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DFKD = [sys.executable, "-m", "dfkd_bench"]
COMMANDS = {
    "readme": "--methods deepinversion,muse,fast --dataset digits --ratio 0.02 --resolution 16 --seed 0,1,2 --device cpu",
    "nine": "--methods muse,nayer,fast,deepinversion,cmi,dafl,dfq,zskt,dfad --ratio 0.1 --seed 0 --device cpu",
}


def step(out: Path, env: dict[str, str], name: str, args: list[str], stdout: Path | None = None) -> None:
    """Run one CLI command (it must succeed), then log the load."""
    with open(stdout or os.devnull, "w") as fh:
        subprocess.run([*DFKD, *args], env=env, stdout=fh, stderr=subprocess.DEVNULL, check=True)
    load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    with open(out / "log.txt", "a") as log:
        log.write(f"{name}: {load}\n")


def check(out: Path) -> None:
    """Calibrate, predict and run both commands into `out`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out.mkdir(parents=True, exist_ok=True)
    step(out, env, "calibrated", ["calibrate", "--device", "cpu"], out / "calibrate.txt")
    for name, command in COMMANDS.items():
        step(out, env, f"{name} predicted", ["run", *command.split(), "--dry-run", "--format", "json", "--quiet"],
             out / f"{name}_plan.json")
    with tempfile.TemporaryDirectory() as runs:
        for name, command in COMMANDS.items():
            step(out, env, f"{name} run", ["run", *command.split(), "--out", f"{runs}/{name}", "--quiet"])
            shutil.copy(f"{runs}/{name}/runs.csv", out / f"{name}_runs.csv")


def compare(out: Path) -> None:
    """Per run and per command: predicted and measured synthesis and KD seconds, and the error."""
    for name in COMMANDS:
        predicted = {p["run_id"]: p["cost"] for p in json.loads((out / f"{name}_plan.json").read_text())}
        with open(out / f"{name}_runs.csv", newline="") as fh:
            rows = {r["run_id"]: r for r in csv.DictReader(fh)}
        print(f"\n{name}: `dfkd-bench run {COMMANDS[name]}`\n")
        print("| run | synth s predicted / measured | KD s predicted / measured | total predicted | total measured | error |")
        print("|---|---|---|---|---|---|")
        total_p = total_m = 0.0
        for run_id, cost in predicted.items():
            synth, kd = float(rows[run_id]["synth_s"]), float(rows[run_id]["kd_s"])
            total_p, total_m = total_p + cost["total_s"], total_m + synth + kd
            print(f"| {run_id.rsplit('-', 1)[0]} | {cost['synth_s']:.1f} / {synth:.1f} | {cost['kd_s']:.1f} / {kd:.1f} | "
                  f"{cost['total_s']:.1f} | {synth + kd:.1f} | {cost['total_s'] / (synth + kd) - 1:+.0%} |")
        print(f"| **the command** | | | **{total_p:.1f}** | **{total_m:.1f}** | **{total_p / total_m - 1:+.1%}** |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/cost-check", help="where the check keeps its files")
    parser.add_argument("--compare", default=None, help="only print the tables of a finished check's folder")
    args = parser.parse_args()
    if args.compare is None:
        check(Path(args.out))
    compare(Path(args.compare or args.out))


if __name__ == "__main__":
    main()
