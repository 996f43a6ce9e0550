"""Resume stays exact under kills. A small run list (Fast and NAYER) is SIGKILLed, its whole process group, at
many moments (Python start-up, while the teacher's card is written, after the teacher is loaded, mid-round,
half-way through a checkpoint write, during the final KD, at random times), re-launched after each kill until it
completes, and must end with every row, curve and student bit-identical to the uninterrupted run's."""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfkd_bench import RunConfig
from dfkd_bench.engine import trainer
from dfkd_bench.engine.flops import FlopMeter
from dfkd_bench.runner import run_many

# Fast and NAYER at ratio 0.05 (72 images): five rounds of 16 images, 4 student steps per 16 images,
# then 8 final student steps; one warm-up round; seconds per run on one core.
SMALL = {"synth_batch": "16", "g_steps": "2", "kd_steps": "4", "kd_batch": "32", "final_kd_steps": "8",
         "warmup_rounds": "1"}
METHODS = ("fast", "nayer")
FINAL_KD_STEPS = int(SMALL["final_kd_steps"])

# The run list as a child process, with an optional kill switch: KILL_AT="EVENT:N" SIGKILLs the child's
# process group at the N-th EVENT of this attempt, where EVENT is one of
#   card   - a teacher's card is being written (half of it, or of its temporary file, is on disk), its
#            weights already saved
#   start  - a run is about to start (start-up done: teacher loaded or trained, test split read)
#   synth  - a synthesis round is about to start (mid-run, between two checkpoints)
#   step   - a student step is about to run (mid-round KD)
#   write  - a checkpoint was written to its temporary file: the file is cut to half its size first, so the
#            kill leaves what a kill in the middle of the write leaves (a torn temporary file, no rename)
#   final  - a student step of a final KD phase is about to run
CHILD = """
import os, pathlib, signal, sys
from dfkd_bench import runner
from dfkd_bench.cli import main
from dfkd_bench.engine import distill, trainer
from dfkd_bench.engine.generator_method import GeneratorMethod

event, _, nth = os.environ.get("KILL_AT", "").partition(":")
seen = 0
in_final_kd = False


def tick():
    global seen
    seen += 1
    if seen == int(nth):
        os.killpg(os.getpgrp(), signal.SIGKILL)


def before(owner, name, when=lambda: True):
    call = getattr(owner, name)

    def hooked(*args, **kwargs):
        if when():
            tick()
        return call(*args, **kwargs)
    setattr(owner, name, hooked)


def final_kd_starts(final_kd):
    def hooked(self):
        global in_final_kd
        in_final_kd = True
        return final_kd(self)
    return hooked


def torn_checkpoint(replace):
    def hooked(src, dst):
        if os.path.basename(dst) == "checkpoint.pt":
            if seen + 1 == int(nth):
                os.truncate(src, os.path.getsize(src) // 2)
            tick()
        return replace(src, dst)
    return hooked


def torn_card(write_text):
    def hooked(self, text, *args, **kwargs):
        card = self.suffix == ".json" or ".json." in self.name  # the card, or its temporary file (atomic write)
        if self.parent.parent.name == "teachers" and card and seen + 1 == int(nth):
            write_text(self, text[:len(text) // 2], *args, **kwargs)
            tick()
        return write_text(self, text, *args, **kwargs)
    return hooked


if event == "card":
    pathlib.Path.write_text = torn_card(pathlib.Path.write_text)
elif event == "start":
    before(runner, "run_one")
elif event == "synth":
    before(GeneratorMethod, "synthesize")
elif event == "step":
    before(distill.Distiller, "step")
elif event == "final":
    trainer.DistillationRun.final_kd = final_kd_starts(trainer.DistillationRun.final_kd)
    before(distill.Distiller, "step", lambda: in_final_kd)
elif event == "write":
    os.replace = torn_checkpoint(os.replace)
main(sys.argv[1:])
"""


def student_of(out: Path, row: dict) -> dict[str, torch.Tensor]:
    """The finished run's student weights."""
    return torch.load(out / "runs" / row["run_id"] / "student.pt", weights_only=True)["state_dict"]


def test_counting_flops_does_not_change_what_a_run_computes(tmp_path: Path, digits_teacher,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The first round of each work key (and the first student step of each shape) runs under the FLOP
    counter, the others plainly; a resumed run counts whatever its checkpoint's meter has not seen. That is
    only exact if counting leaves the numbers alone: a Fast run with the meter off ends bit-identical."""
    config = RunConfig(method="fast", dataset="digits", ratio=0.05, seed=0, device="cpu", overrides=dict(SMALL))
    [counted] = run_many([config], tmp_path / "counted")
    monkeypatch.setattr(trainer, "FlopMeter", lambda: FlopMeter(enabled=False))
    [plain] = run_many([config], tmp_path / "plain")
    assert float(counted["synth_tflop"]) > 0 and float(plain["synth_tflop"]) == 0  # the meter was off
    assert plain["student_acc"] == counted["student_acc"]
    a, b = student_of(tmp_path / "counted", counted), student_of(tmp_path / "plain", plain)
    assert all(torch.equal(a[k], b[k]) for k in a)


def command(out: Path, smoke: bool) -> list[str]:
    """The run list through the CLI (the child above), written to `out`: SMALL, or a smoke check."""
    sizes = ["--smoke"] if smoke else ["--ratio", "0.05", *[arg for method in METHODS for key, value in SMALL.items()
                                                           for arg in ("--set", f"{method}.{key}={value}")]]
    return [sys.executable, "-c", CHILD, "run", "--methods", ",".join(METHODS), "--seed", "0", "--device", "cpu",
            "--out", str(out), "--quiet", *sizes]


class RunList:
    """Attempts at one run list in one output folder, each in a process group of its own."""

    def __init__(self, out: Path, smoke: bool = False, cache: Path | None = None) -> None:
        self.out, self.smoke = out, smoke
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", **({"DFKD_BENCH_CACHE": str(cache)} if cache else {})}

    def launch(self, kill_at: str = "") -> subprocess.Popen:
        """Start an attempt with the kill switch set to `kill_at` ("" for none)."""
        return subprocess.Popen(command(self.out, self.smoke), env={**self.env, "KILL_AT": kill_at},
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def attempt(self, kill: str = "") -> bool:
        """One attempt, killed as `kill` says ("time:S": the group SIGKILLed after S seconds; else a KILL_AT
        event; "": not at all); True when it was killed, False when it completed."""
        kind, _, value = kill.partition(":")
        child = self.launch("" if kind == "time" else kill)
        if kind == "time":
            try:
                child.wait(timeout=float(value))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        _, err = child.communicate(timeout=300)
        assert child.returncode in (0, -signal.SIGKILL), err[-2000:]
        return child.returncode == -signal.SIGKILL

    def complete(self) -> bool:
        """Whether runs.csv holds a row for every run of the list."""
        return (self.out / "runs.csv").is_file() and len(self.rows()) == len(METHODS)

    def rows(self) -> list[dict[str, str]]:
        """The rows of runs.csv."""
        with open(self.out / "runs.csv", newline="") as fh:
            return list(csv.DictReader(fh))

    def killed_until_complete(self, plan: list[str]) -> list[str]:
        """The attempts of `plan`, in order, while the list is incomplete, then plain ones until it is;
        returns the kinds of the kills that landed."""
        landed = []
        for kill in plan:
            if self.complete():
                break
            landed += [kill.partition(":")[0]] if self.attempt(kill) else []
        while not self.complete():
            assert not self.attempt()
        return landed

    def outcome(self) -> dict[str, tuple]:
        """Each row's (status, student_acc, n_synthetic, teacher_acc), its curve and its student, by run_id."""
        result = {}
        for row in self.rows():
            with open(self.out / "runs" / row["run_id"] / "curve.csv", newline="") as fh:
                curve = [(p["round"], p["images"], p["student_acc"]) for p in csv.DictReader(fh)]
            summary = (row["status"], row["student_acc"], row["n_synthetic"], row["teacher_acc"])
            result[row["run_id"]] = (summary, curve, student_of(self.out, row))
        assert not list(self.out.glob("runs/*/checkpoint.pt"))
        return result


def assert_same_outcome(got: dict[str, tuple], expected: dict[str, tuple]) -> None:
    """Every row ok and equal, every curve equal, every student bit-identical."""
    assert got.keys() == expected.keys() and len(expected) == len(METHODS)
    for run_id, (row, curve, student) in expected.items():
        assert row[0] == "ok" and got[run_id][0] == row, run_id
        assert got[run_id][1] == curve, run_id
        assert all(torch.equal(student[k], got[run_id][2][k]) for k in student), run_id


@pytest.mark.slow
def test_a_run_list_killed_at_many_moments_ends_with_the_uninterrupted_rows(tmp_path: Path,
                                                                            digits_teacher) -> None:
    whole = RunList(tmp_path / "whole")
    started = time.monotonic()
    assert not whole.attempt()
    seconds = time.monotonic() - started

    rng = random.Random(16)  # the kill moments, in order
    plan = [
        f"time:{rng.uniform(0.05, 0.5):.2f}",  # Python start-up: imports
        "start:1",  # the teacher loaded, the first run about to start
        f"synth:{rng.randint(1, 3)}",  # mid-run, between two checkpoints
        "write:1",  # the first checkpoint after a resume, torn half-way
        f"time:{rng.uniform(1.0, seconds):.2f}",
        "write:1",  # torn again right after the next resume: a double kill between the same two rounds
        f"final:{rng.randint(1, FINAL_KD_STEPS)}",
        f"step:{rng.randint(1, 6)}",
        f"write:{rng.randint(1, 2)}",
        f"final:{rng.randint(1, FINAL_KD_STEPS)}",
        f"time:{rng.uniform(1.0, seconds):.2f}",
    ]
    killed = RunList(tmp_path / "killed")
    landed = killed.killed_until_complete(plan)
    assert {"time", "start", "synth", "step", "write", "final"} <= set(landed) and len(landed) >= 8, landed
    assert_same_outcome(killed.outcome(), whole.outcome())


@pytest.mark.slow
def test_kills_while_the_teacher_is_cached_leave_the_rows_unchanged(tmp_path: Path) -> None:
    """A smoke check on empty teacher caches: the uninterrupted list trains its teacher and uses it from memory
    for both runs; the killed one is stopped while the teacher's card is half written (so the next attempt
    trains again) and before its second run, which then uses the teacher loaded from the cache."""
    whole = RunList(tmp_path / "whole", smoke=True, cache=tmp_path / "cache_whole")
    assert not whole.attempt()
    killed = RunList(tmp_path / "killed", smoke=True, cache=tmp_path / "cache_killed")
    assert killed.killed_until_complete(["time:0.3", "card:1", "start:2"]) == ["time", "card", "start"]
    assert_same_outcome(killed.outcome(), whole.outcome())
