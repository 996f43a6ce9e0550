"""What the CLI's commands share: the `dfkd-bench` click group, the console, list parsing, plugins,
data options, the deprecation note and the command line it was given."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ..data import DATASETS
from ..errors import UserError
from ..plugins import load_plugin


console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 160)


def split_values(value: str | None, kind: type, name: str) -> list[Any]:
    if value is None:
        return []
    try:
        return [kind(v.strip()) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{name} {value!r}: expected comma-separated {kind.__name__} values") from None


def load_plugins(plugins: tuple[str, ...]) -> None:
    for path in plugins:
        load_plugin(path)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dfkd-bench")
@click.option("--plugin", "plugins", multiple=True, type=click.Path(), help="Python file that registers methods.")
def cli(plugins: tuple[str, ...]) -> None:
    """Benchmark data-free knowledge distillation methods on equal budgets."""
    load_plugins(plugins)


def class_count(dataset: str) -> int | None:
    """A dataset's number of classes by name, for runs.csv files that did not record num_classes (None if unknown)."""
    try:
        return DATASETS.get(dataset).num_classes
    except UserError:
        return None


def maybe_download(dataset: str, data_root: str | None, download: bool) -> None:
    if not download:
        return
    from ..data.cifar import TORCHVISION_CLASSES, download_cifar
    from ..data.spec import DATA_ENV

    spec = DATASETS.get(dataset)
    if spec.name not in TORCHVISION_CLASSES:
        raise UserError(f"--download fetches {', '.join(TORCHVISION_CLASSES)}; {spec.name} must be copied "
                        f"to --data-root by hand")
    root = data_root or os.environ.get(DATA_ENV)
    if not root:
        raise UserError(f"--download needs --data-root DIR (or ${DATA_ENV}) to download into")
    Path(root).mkdir(parents=True, exist_ok=True)
    download_cifar(spec, root)


def warn_deprecated(old: str, new: str) -> None:
    """One `note:` line on stderr for an old spelling that still works for one release."""
    click.echo(f"note: `{old}` is deprecated and will be removed; use `{new}`", err=True)


INVOCATION: list[str] = []  # the command line `main` was given (what `run --nproc N` passes to each process)


def without_nproc(args: list[str]) -> list[str]:
    """The arguments without `--nproc N` / `--nproc=N`."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out
