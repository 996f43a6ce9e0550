"""`--amp off` against `--amp auto`, side by side in one sitting: the README's first command and the ratio-0.1
nine-method digits run, each into a fresh output folder; prints whole-command wall seconds and the speed-up.

    .venv/bin/python benchmarks/amp_speed.py [--threads N] [--keep DIR] [--smoke]

Run it on a quiet machine (nothing else loading the cores). The digits teacher is trained and cached first
when it is not yet, outside the timing. What `auto` picked on this machine (the rows' `amp` column) and the CPU's name are printed with the
numbers, with the synthesis and KD seconds of each side summed over its runs (where bf16 pays per phase); on a
CPU without AMX or AVX512-BF16 `auto` is fp32 and the ratio is 1 up to noise.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DFKD = [sys.executable, "-m", "dfkd_bench"]
NINE = ("--methods muse,nayer,fast,deepinversion,cmi,dafl,dfq,zskt,dfad --ratio 0.1 --seed 0 --device cpu")


def readme_command() -> str:
    """The arguments of the first `dfkd-bench run` in README.md (its "Set up" command)."""
    match = re.search(r"dfkd-bench run ([^\n`]+)", (ROOT / "README.md").read_text())
    if match is None:
        raise SystemExit("README.md has no `dfkd-bench run` command")
    return match.group(1).strip()


def timed(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one whole CLI command (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(DFKD + args, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def phase_seconds(out: Path) -> dict[str, float]:
    """Synthesis and KD seconds summed over the rows of `out/runs.csv` (to choose a precision per phase)."""
    rows = rows_of(out)
    return {phase: sum(float(r[f"{phase}_s"] or 0) for r in rows) for phase in ("synth", "kd")}


def precision_of(out: Path) -> str:
    """The precisions and device names the rows of `out/runs.csv` record."""
    rows = rows_of(out)
    amps = sorted({r.get("amp") or "?" for r in rows})
    names = sorted({r.get("device_name") or r.get("device") or "?" for r in rows})
    return f"{'/'.join(amps)} on {'/'.join(names)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs (default: torch's)")
    parser.add_argument("--keep", type=Path, default=None, help="Folder for the output folders (default: a temp one)")
    parser.add_argument("--smoke", action="store_true", help="The same commands with --smoke: check the script only")
    opts = parser.parse_args()
    env = dict(os.environ)
    if opts.threads:
        env["OMP_NUM_THREADS"] = str(opts.threads)
    base = opts.keep or Path(tempfile.mkdtemp(prefix="amp_speed_"))
    commands = {"README first command": readme_command(), "nine methods, ratio 0.1": NINE}
    print(f"outputs under {base}; the digits teacher first (untimed, trained only if not cached)", flush=True)
    cached = subprocess.run(DFKD + ["teachers"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    if "digits_resnet8 " not in cached.stdout:
        subprocess.run(DFKD + ["teacher", "train", "--dataset", "digits", "--quiet"], cwd=ROOT, env=env, check=True)
    lines = ["| command | --amp off s | --amp auto s | speed-up | synth s off / auto | kd s off / auto | auto ran |",
             "|---|---|---|---|---|---|---|"]
    for name, command in commands.items():
        seconds, phases = {}, {}
        for amp in ("off", "auto"):
            out = base / f"{re.sub(r'[^a-z0-9]+', '_', name.lower())}_{amp}"
            args = ["run", *shlex.split(command), "--amp", amp, "--out", str(out), "--quiet", *(["--smoke"] * opts.smoke)]
            print(f"dfkd-bench {shlex.join(args)}", flush=True)
            seconds[amp] = timed(args, env)
            phases[amp] = phase_seconds(out)
        split = " | ".join(f"{phases['off'][p]:.1f} / {phases['auto'][p]:.1f}" for p in ("synth", "kd"))
        lines.append(f"| {name} | {seconds['off']:.1f} | {seconds['auto']:.1f} | "
                     f"{seconds['off'] / seconds['auto']:.2f}x | {split} | {precision_of(out)} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
