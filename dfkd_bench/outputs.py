"""The output folder: runs.csv (one row per run, keyed by run_id) and runs/<run_id>/ files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch

FINISHED = ("ok", "diverged", "over_budget")  # statuses of a run that is over (never redone, never resumed)

RUNS_COLUMNS = [
    "run_id", "method", "dataset", "teacher", "student", "ratio", "resolution", "seed", "n_synthetic",
    "teacher_acc", "student_acc", "synth_s", "kd_s", "eval_s", "total_s", "peak_mem_mb", "device",
    "status", "error", "started_at", "version", "smoke", "protocol", "time_budget",
    "budget", "synth_batch", "kd_batch", "world_size", "bank_tier", "synth_tflop", "kd_tflop",
    "synth_tflops", "kd_tflops", "protocol_notes", "kd_steps", "paper_kd_steps", "rounds", "round_images",
    "tolerance_s", "unit_s", "num_classes", "amp", "device_name",
]


def read_runs(out_dir: Path) -> dict[str, dict[str, str]]:
    """Rows of runs.csv keyed by run_id (empty if the file does not exist)."""
    path = out_dir / "runs.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as fh:
        return {row["run_id"]: row for row in csv.DictReader(fh)}


def write_run_row(out_dir: Path, row: dict[str, Any]) -> None:
    """Insert or replace the row of `row['run_id']`; the file is rewritten atomically."""
    rows = read_runs(out_dir)
    rows[str(row["run_id"])] = {k: row.get(k, "") for k in RUNS_COLUMNS}
    write_runs_csv(out_dir, rows.values(), RUNS_COLUMNS)


def write_runs_csv(out_dir: Path, rows: Iterable[dict[str, Any]], columns: list[str]) -> None:
    """Write runs.csv with `columns` atomically (a temporary file renamed over it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "runs.csv.tmp"
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out_dir / "runs.csv")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str))


def write_curve(path: Path, points: Iterable[Any]) -> None:
    """curve.csv: round, images, elapsed_s (synthesis + KD seconds so far), student_acc."""
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["round", "images", "elapsed_s", "student_acc"])
        for p in points:
            writer.writerow([p.round, p.images, f"{p.elapsed_s:.3f}", f"{p.student_acc:.2f}"])


def write_samples(path: Path, images: torch.Tensor, nrow: int = 16) -> None:
    """A grid of synthetic images (uint8 or [0,1] float) as PNG."""
    from torchvision.utils import save_image

    if images.dtype == torch.uint8:
        images = images.float() / 255
    save_image(images.cpu(), path, nrow=nrow, padding=1)


def write_sample_arrays(path: Path, images: torch.Tensor, labels: torch.Tensor, class_names: Iterable[str]) -> None:
    """samples.npz: uint8 images (N, C, H, W), their labels and the dataset's class names, so figures
    can label each synthetic image without torch or the dataset."""
    import numpy as np

    if images.dtype != torch.uint8:
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    np.savez_compressed(path, images=images.cpu().numpy(), labels=labels.cpu().numpy().astype(np.int64),
                        class_names=np.array(list(class_names), dtype=str))
