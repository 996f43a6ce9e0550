"""`dfkd-bench calibrate`: time the suite's synthesis rounds and student steps on this device, in its
precision (about a minute), so that dry runs predict seconds from counted work."""

from __future__ import annotations

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..engine.precision import AMP_MODES
from .common import cli, console


@cli.command("calibrate")
@click.option("--device", default="auto", show_default=True, help="auto, cpu or cuda.")
@click.option("--amp", default="auto", show_default=True, type=click.Choice(AMP_MODES),
              help="The precision to calibrate, as `run --amp` picks it on this device.")
@click.option("--quiet", is_flag=True, help="No progress bar and no table; only the file's path.")
def calibrate_cmd(device: str, amp: str, quiet: bool) -> None:
    """Measure this device's rates (per operator and per FLOP, for synthesis and KD) and store them under
    $DFKD_BENCH_CACHE/calibration/<device-name>.json; `run --dry-run` and `sweep --dry-run` use them."""
    from ..cost.probes import Probe, calibrate, probes_for
    from ..cost.rates import save
    from ..resolve import pick_device, resolve

    dev = pick_device(device)
    probes = [(p, resolve(p.config(dev, amp), need_data=False, world_size=1)) for p in probes_for(dev)]
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=True, disable=quiet)
    with progress:
        task = progress.add_task("calibrating", total=len(probes))
        started: list[Probe] = []

        def on_probe(probe: Probe) -> None:
            progress.update(task, completed=len(started), description=probe.label)
            started.append(probe)

        calibration = calibrate(dev, amp, probes, on_probe=on_probe)
        progress.update(task, completed=len(probes))
    path = save(calibration)
    if not quiet:
        table = Table(title=f"{calibration.label()}")
        for col in ("probe", "GFLOP", "ops", "GB written", "measured s", "model s"):
            table.add_column(col, justify="left" if col == "probe" else "right")
        for p in calibration.points:
            model = calibration.phases[p.phase].seconds(p.work)
            table.add_row(p.label, f"{p.flops / 1e9:.2f}", str(p.ops), f"{p.bytes / 1e9:.2f}", f"{p.seconds:.4f}",
                          f"{model:.4f}")
        console.print(table)
        for phase, rate in calibration.phases.items():
            console.print(f"{phase}: {rate.seconds_per_op * 1e6:.1f} us per operator, "
                          f"{rate.flops_per_second / 1e9:.1f} GFLOP/s, {rate.bytes_per_second / 1e9:.1f} GB/s written",
                          markup=False)
        console.print(f"FLOP counter: {calibration.counter_seconds_per_op * 1e6:.1f} us per operator", markup=False)
    console.print(f"calibration: {path}", markup=False)
