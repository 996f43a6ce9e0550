"""One run data-parallel over 2 CPU processes (torch.distributed, gloo), through `dfkd-bench run --nproc 2`:
it finishes, banks as many images as the single-process run, resumes after being killed, and (slow)
reaches an accuracy comparable to the single-process run's."""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfkd_bench import runner
from dfkd_bench.cli import main
from dfkd_bench.distributed import Group
from dfkd_bench.engine import checkpoint

# Fast: 72 images (ratio 0.05) in 9 rounds of 8, long enough to be killed between two checkpoints;
# DFAD (online): 9 fresh batches of 8 in rounds of 4 student steps
SMALL = {"fast": {"synth_batch": "8", "g_steps": "2", "kd_steps": "4", "kd_batch": "16", "final_kd_steps": "0",
                  "warmup_rounds": "1"},
         "dfad": {"kd_batch": "8", "round_steps": "4"}}


def sets(values: dict[str, dict[str, str]]) -> list[str]:
    return [f"{m}.{k}={v}" for m, kv in values.items() for k, v in kv.items()]


def command(out: Path, ratio: float, values: dict[str, dict[str, str]], torchrun: bool = False) -> list[str]:
    """`dfkd-bench run --nproc 2 ...`, or with `torchrun` the same run started by torchrun itself."""
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"] if torchrun else []
    args = [sys.executable, *launcher, "-m", "dfkd_bench", "run", "--methods", ",".join(values), "--ratio", str(ratio),
            "--device", "cpu", "--out", str(out), "--quiet", *([] if torchrun else ["--nproc", "2"])]
    for s in sets(values):
        args += ["--set", s]
    return args


def rows_of(out: Path) -> dict[str, dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return {row["method"]: row for row in csv.DictReader(fh)}


def test_group_shares_and_seeds() -> None:
    group = Group(rank=1, world_size=3)
    assert group.shares(10) == [4, 3, 3] and group.share(10) == 3 and sum(group.shares(7)) == 7
    assert Group(0, 3).seed(5) == 5 and len({Group(r, 3).seed(5) for r in range(3)}) == 3
    assert Group().share(9) == 9 and not Group().active and Group().is_main


def test_two_processes_finish_resume_after_a_kill_and_bank_every_image(tmp_path: Path, digits_teacher) -> None:
    """Fast (a bank method) started by torchrun and killed mid-run, then resumed by `run --nproc 2`, which
    also runs DFAD (an online method: each rank draws its half of every fresh batch)."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen(command(out, 0.05, SMALL, torchrun=True), start_new_session=True, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, env=env)
    deadline = time.time() + 300
    ckpt = None
    while time.time() < deadline and run.poll() is None:
        found = list(out.glob("runs/fast-*/checkpoint.pt"))
        if found and checkpoint.load(found[0])["state"].next_round >= 3:
            ckpt = found[0]
            break
        time.sleep(0.2)
    assert ckpt is not None, run.communicate()[0].decode()[-2000:]
    os.killpg(run.pid, signal.SIGKILL)  # the whole group: torchrun and both ranks, mid-run
    run.wait()
    saved = checkpoint.load(ckpt)
    assert saved["world_size"] == 2 and len(saved["ranks"]) == 2
    assert not torch.equal(saved["ranks"][0]["rng"]["generator"], saved["ranks"][1]["rng"]["generator"])

    done = subprocess.run(command(out, 0.05, SMALL), capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = rows_of(out)
    single = {r.method_cls.name: r for r in runner.run(list(SMALL), ratio=0.05, device="cpu", sets=sets(SMALL),
                                                        dry_run=True)}
    for method, row in rows.items():
        assert row["status"] == "ok" and row["world_size"] == "2" and float(row["synth_tflop"]) > 0
        assert int(row["n_synthetic"]) == single[method].n_synthetic == 72
        assert row["run_id"] != single[method].run_id  # two processes are a different run (their own RNG streams)
    log = (out / "runs" / rows["fast"]["run_id"] / "log.txt").read_text()
    rounds = [int(r) for r in re.findall(r"round (\d+)/9 ", log)]
    assert rounds.count(1) == 1 and rounds[-1] == 9 and len(rounds) < 2 * 9  # resumed, not restarted
    assert not (out / "runs" / rows["fast"]["run_id"] / "checkpoint.pt").exists()


def test_what_cannot_run_data_parallel_is_refused_before_starting(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["run", "--methods", "fast", "--device", "cpu", "--out", str(tmp_path), "--nproc", "2", "--auto-batch"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and err.count("\n") == 1 and "--auto-batch" in err
    assert not (tmp_path / "runs.csv").exists() and "WORLD_SIZE" not in os.environ


@pytest.mark.slow
def test_two_processes_reach_the_single_process_accuracy(tmp_path: Path, digits_teacher) -> None:
    """The digits preset at ratio 0.05: both students well above chance and within 15 points."""
    single = runner.run(["fast"], ratio=0.05, out=tmp_path / "one", device="cpu")[0]
    done = subprocess.run(command(tmp_path / "two", 0.05, {"fast": {}}), capture_output=True, text=True,
                          timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    two = rows_of(tmp_path / "two")["fast"]
    assert int(two["n_synthetic"]) == int(single["n_synthetic"])
    acc_one, acc_two = float(single["student_acc"]), float(two["student_acc"])
    assert acc_one > 60 and acc_two > 60 and abs(acc_one - acc_two) < 15, (acc_one, acc_two)
