"""Paper-scale plans in device-hours: each plan's runs resolved without data, their work counted on the meta
device (`dfkd_bench.cost`), and the hours on a named GPU at stated shares of its published peak; next to
them the GPU-hours the papers report (`reference/published_results.csv`, where they give any).

    .venv/bin/python benchmarks/paper_plans.py [--device H100] [--utilisation 0.1,0.25] [--published FILE]

Prints a markdown table (benchmarks/README.md, "Paper-scale plans"). Counting takes seconds a run.
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfkd_bench.cost.count import count_run
from dfkd_bench.cost.peaks import named_peak
from dfkd_bench.runner import run

ROOT = Path(__file__).resolve().parent.parent
PUBLISHED = ROOT.parent / "shared" / "reference" / "published_results.csv"
CIFAR100_PAIR = {"teacher": "wrn40_2", "student": "wrn16_2"}  # the pair of NAYER's GPU-hours chart


@dataclass
class Plan:
    """A row: a label, the `run()` arguments of its runs, and the published entries it compares with
    (dataset, method) and whether those hours are synthesis only."""

    label: str
    methods: str
    options: dict[str, Any]
    sets: list[str] = field(default_factory=list)
    published: tuple[str, str] | None = None
    synthesis_only: bool = False


def cifar100_epochs(rounds_per_epoch_images: int, warmup_images: int, epochs: int) -> float:
    """The ratio of a CIFAR-100 paper schedule of `epochs` post-warm-up epochs (50,000 train images)."""
    return (warmup_images + epochs * rounds_per_epoch_images) / 50000


PLANS = [
    Plan("ImageNet, MUSE + NAYER, ratio 0.1, 112 px", "muse,nayer", {"dataset": "imagenet", "ratio": 0.1, "resolution": 112}),
    Plan("ImageNet, MUSE + NAYER, ratio 0.1, 224 px", "muse,nayer", {"dataset": "imagenet", "ratio": 0.1, "resolution": 224}),
    *(Plan(f"CIFAR-100 NAYER{e} (paper)", "nayer",
           {"dataset": "cifar100", "protocol": "paper", "ratio": cifar100_epochs(800, 80000, e), **CIFAR100_PAIR},
           published=("cifar100", f"nayer{e}")) for e in (100, 200, 300)),
    *(Plan(f"CIFAR-100 Fast-10, {e + 20} epochs (paper)", "fast",
           {"dataset": "cifar100", "protocol": "paper", "ratio": (e + 20) * 256 / 50000, **CIFAR100_PAIR},
           published=("cifar100", f"fast_meta{e}")) for e in (100, 200, 300)),
    Plan("CIFAR-10, nine methods, ratio 0.1 (equal)", "muse,nayer,fast,deepinversion,cmi,dafl,dfq,zskt,dfad",
         {"dataset": "cifar10", "ratio": 0.1}),
    Plan("ImageNet Fast-50 synthesis, 140k images (paper), ResNet-50", "fast",
         {"dataset": "imagenet", "protocol": "paper", "ratio": 140000 / 1281167, "teacher": "tv_resnet50",
          "student": "tv_resnet50"}, published=("imagenet", "fast-50"), synthesis_only=True),
    Plan("ImageNet DeepInversion synthesis, 140k images, ResNet-50", "deepinversion",
         {"dataset": "imagenet", "ratio": 140000 / 1281167, "teacher": "tv_resnet50", "student": "tv_resnet50"},
         published=("imagenet", "deepinversion"), synthesis_only=True),
]


def published_hours(path: Path) -> dict[tuple[str, str], float]:
    """(dataset, method) -> the hours a paper reports (rows with hours only)."""
    with open(path, newline="") as fh:
        return {(r["dataset"], r["method"]): float(r["hours"]) for r in csv.DictReader(fh) if r["hours"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="H100", help="a GPU of dfkd_bench.cost.peaks.PEAKS")
    parser.add_argument("--utilisation", default="0.1,0.25", help="shares of the bf16 peak, comma-separated")
    parser.add_argument("--published", default=str(PUBLISHED))
    args = parser.parse_args()
    peak = named_peak(args.device)
    shares = [float(u) for u in args.utilisation.split(",")]
    published = published_hours(Path(args.published)) if Path(args.published).exists() else {}
    head = " | ".join(f"{args.device} h at {u:.0%}" for u in shares)
    print(f"| plan | runs | synth PFLOP | KD PFLOP | {head} | published GPU-h | implied TFLOP/s |")
    print("|---|---|---|---|" + "---|" * len(shares) + "---|---|")
    for plan in PLANS:
        started = time.perf_counter()
        runs = run(plan.methods, sets=plan.sets, dry_run=True, device="cpu", **plan.options)
        counts = [count_run(r) for r in runs]
        synth = sum(c.synth.total.flops for c in counts)
        kd = sum(c.kd.total.flops for c in counts)
        compared = synth if plan.synthesis_only else synth + kd
        hours = [(synth + kd) / (u * peak.tflops("bf16") * 1e12) / 3600 for u in shares]
        reported = published.get(plan.published) if plan.published else None
        implied = f"{compared / (reported * 3600) / 1e12:.1f}" if reported else "—"
        what = " (synthesis)" if plan.synthesis_only and reported else ""
        print(f"| {plan.label} | {len(runs)} | {synth / 1e15:,.1f} | {kd / 1e15:,.1f} | "
              + " | ".join(f"{h:,.2f}" for h in hours)
              + f" | {f'{reported:g}{what}' if reported else '—'} | {implied} |", flush=True)
        print(f"<!-- {plan.label}: counted in {time.perf_counter() - started:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
