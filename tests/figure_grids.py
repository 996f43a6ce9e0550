"""Hand-made results folders for the figure tests: runs.csv rows, each run's curve.csv and samples.npz, and the
three grids the figure-layout test renders every figure kind on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

NEW_COLUMNS = ["kd_steps", "paper_kd_steps", "rounds", "round_images", "tolerance_s", "unit_s", "num_classes"]
ALL_METHODS = ["muse", "nayer", "fast", "deepinversion", "cmi", "dafl", "dfq", "zskt", "dfad"]
ONLINE = {"dafl", "dfq", "zskt", "dfad"}
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def run_row(method: str, ratio: float, resolution: str, seed: int, acc: float, total: float, budget: str = "",
            status: str = "ok", smoke: str = "0") -> dict:
    """One runs.csv row in the current format (synthesis and KD seconds share `total` less 0.1 s of evaluation)."""
    run_id = f"{method}-r{ratio}-{resolution}px-b{budget or 0}-s{seed}-{status}{smoke}"
    over = status == "over_budget"
    spent = total - 0.1
    return {"run_id": run_id, "method": method, "dataset": "digits", "teacher": "digits_resnet8",
            "student": "digits_resnet8_slim", "ratio": ratio, "resolution": resolution, "seed": seed,
            "n_synthetic": int(1000 * ratio),
            "teacher_acc": 99.0, "student_acc": "" if over else acc, "synth_s": spent / 2, "kd_s": spent / 2,
            "eval_s": 0.1, "total_s": total, "peak_mem_mb": "", "device": "cpu", "status": status, "error": "",
            "started_at": "", "version": "0", "smoke": smoke, "protocol": "equal", "time_budget": budget,
            "budget": "images", "kd_steps": 100, "paper_kd_steps": 2000 if method in ONLINE else "", "rounds": 5,
            "round_images": 16, "tolerance_s": max(0.05 * float(budget), 0.01) if budget else "",
            "unit_s": 85.0 if over else "", "num_classes": 10}


def write_run_files(folder: Path, row: dict, channels: int = 1, samples: bool = True,
                    classes: tuple[str, ...] = DIGIT_NAMES) -> None:
    """curve.csv (three evaluations) and, if asked, samples.npz (two class-coloured images per class) of one run."""
    run_dir = folder / "runs" / row["run_id"]
    run_dir.mkdir(parents=True)
    acc = row["student_acc"] if row["student_acc"] != "" else 10.0
    seconds = max(float(row["synth_s"]) + float(row["kd_s"]), 3.0)
    pd.DataFrame({"round": [1, 2, 3], "images": [1, 2, 3], "elapsed_s": [1.0 + row["seed"] / 10, 2.0, seconds],
                  "student_acc": [10.0, max(acc - 10, 10.0), acc]}).to_csv(run_dir / "curve.csv", index=False)
    if samples:
        labels = np.tile(np.arange(len(classes), dtype=np.int64), 2)
        images = np.repeat((labels * 25).astype(np.uint8)[:, None, None, None], channels, axis=1) * np.ones(
            (1, 1, 8, 8), dtype=np.uint8)
        np.savez_compressed(run_dir / "samples.npz", images=images, labels=labels, class_names=np.array(classes))


def write_folder(folder: Path, rows: list[dict], old_format: bool = False) -> Path:
    """runs.csv of `rows` (without the columns issue 17 added, if `old_format`) and each run's files."""
    folder.mkdir(parents=True, exist_ok=True)
    for row in rows:
        write_run_files(folder, row, samples=row["seed"] == 0)
    frame = pd.DataFrame(rows)
    (frame.drop(columns=NEW_COLUMNS) if old_format else frame).to_csv(folder / "runs.csv", index=False)
    return folder


def nine_methods(folder: Path) -> Path:
    """Nine methods x two resolutions x two ratios x two seeds, and 5, 20 and 60 s budgets at ratio 1 where
    DeepInversion is over budget below 60 s and one CMI seed goes over 5 s."""
    rows = []
    for i, method in enumerate(ALL_METHODS):
        for resolution in ("16", "32"):
            for seed in (0, 1):
                bonus = 3 * seed + (2 if resolution == "32" else 0)
                rows += [run_row(method, ratio, resolution, seed, min(100.0, 50 + 5 * i + 60 * ratio + bonus),
                                 20 + 100 * ratio + 5 * i + 10 * seed) for ratio in (0.05, 0.2)]
                for budget in (5, 20, 60):
                    over = (method == "deepinversion" and budget < 60) or (method == "cmi" and budget == 5 and seed)
                    rows.append(run_row(method, 1.0, resolution, seed, min(100.0, 30 + 4 * i + budget / 2 + bonus),
                                        budget * (1.5 if over else 0.98) + 0.1, str(budget),
                                        "over_budget" if over else "ok"))
    return write_folder(folder, rows)


def two_methods(folder: Path) -> Path:
    """Two methods, one ratio, two resolutions, two seeds, in the old runs.csv format; seeds near 100% and with
    very different times, so that a standard deviation would cross the bounds."""
    rows = [run_row(method, 0.1, resolution, seed, (97.0, 100.0)[seed] - 10 * i, (3.0, 90.0)[seed] + 5 * i)
            for i, method in enumerate(("muse", "nayer")) for resolution in ("16", "32") for seed in (0, 1)]
    return write_folder(folder, rows, old_format=True)


def one_method(folder: Path) -> Path:
    """One method at one resolution and one seed: two ratios, and 5 s (over budget) and 20 s budgets."""
    rows = [run_row("fast", ratio, "32", 0, 60 + 100 * ratio, 30 + 100 * ratio) for ratio in (0.05, 0.2)]
    rows += [run_row("fast", 1.0, "32", 0, 0.0, 9.0, "5", "over_budget"), run_row("fast", 1.0, "32", 0, 75.0,
                                                                                  19.5, "20")]
    return write_folder(folder, rows)


GRIDS = {"nine-methods": nine_methods, "two-methods": two_methods, "one-method": one_method}
