"""`dfkd-bench teacher train|import`: teachers trained, imported or taken from torchvision, with cards."""

from __future__ import annotations

import os
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ..errors import UserError
from ..models import MODELS
from .common import cli, console, maybe_download
from .options import data_options


@cli.group("teacher")
def teacher_group() -> None:
    """Train or inspect cached teachers."""


def _teacher_arguments(dataset: str, arch: str | None, classes: str | None, device: str) -> tuple[Any, str, Any]:
    """Dataset spec (with --classes), architecture and device: what the arguments decide before any data."""
    from ..resolve import dataset_spec, pick_device

    spec = dataset_spec(dataset, classes)
    arch = arch or spec.default_teacher
    MODELS.get(arch)
    return spec, arch, pick_device(device)


def _teacher_data(dataset: str, spec: Any, data_root: str | None, download: bool, need_data: bool) -> Any:
    """The data source (after --download), or None where the data is optional and absent."""
    maybe_download(dataset, data_root, download)
    if need_data or data_root or os.environ.get("DFKD_BENCH_DATA") or not spec.needs_data_root:
        return spec.open(data_root)
    return None


def _print_card(card: Any) -> None:
    acc = f"{card.test_acc:.2f}% on {card.test_images} test images" if card.test_acc is not None else \
        "accuracy not measured (no --data-root)"
    restricted = f", restricted from {card.restricted_from} classes" if card.restricted_from else ""
    console.print(f"teacher {card.arch} for {card.dataset}: {acc}{restricted}{' [smoke]' if card.smoke else ''} "
                  f"-> {card.path} (sha256 {card.sha256[:12]})", markup=False)


@teacher_group.command("train")
@click.option("--dataset", default="digits", show_default=True)
@click.option("--arch", default=None, help="Architecture (default: the dataset's teacher).")
@click.option("--epochs", default=None, type=int, help="Training epochs (default: the dataset's recipe).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--device", default="auto", show_default=True)
@data_options
@click.option("--smoke", is_flag=True, help="A few steps only: check the data and model end to end.")
@click.option("--quiet", is_flag=True, help="No progress output.")
def teacher_train_cmd(dataset: str, arch: str | None, epochs: int | None, seed: int, device: str,
                      data_root: str | None, classes: str | None, download: bool, smoke: bool, quiet: bool) -> None:
    """Train a teacher on the real train split (SGD, cosine; 200 epochs for CIFAR) and cache it with its card."""
    from ..teachers import recipe_for, trained_teacher

    spec, arch, dev = _teacher_arguments(dataset, arch, classes, device)
    recipe = recipe_for(spec, smoke, **({"epochs": epochs} if epochs is not None else {}))
    source = _teacher_data(dataset, spec, data_root, download, need_data=True)
    train_size = source.train_size
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console, transient=True,
                        disable=quiet)
    with progress:
        task = progress.add_task(f"teacher {arch} on {spec.name} ({train_size} images, {recipe.epochs} epochs)",
                                 total=None, info="")
        _, card = trained_teacher(
            spec, arch, source, dev, seed, recipe, smoke,
            on_step=lambda done, total: progress.update(task, completed=done, total=total),
            on_epoch=lambda epoch, epochs, loss: progress.update(task, info=f"epoch {epoch}/{epochs} loss {loss:.3f}"))
    if not quiet:
        _print_card(card)


@teacher_group.command("import")
@click.argument("file", required=False, type=click.Path())
@click.option("--dataset", required=True, help="Dataset the teacher classifies.")
@click.option("--arch", required=True, help="Architecture of the checkpoint (`dfkd-bench models`).")
@click.option("--teacher-weights", default=None, help="Instead of FILE: a torchvision weight set, e.g. IMAGENET1K_V1.")
@click.option("--device", default="auto", show_default=True)
@data_options
def teacher_import_cmd(file: str | None, dataset: str, arch: str, teacher_weights: str | None, device: str,
                       data_root: str | None, classes: str | None, download: bool) -> None:
    """Cache a teacher trained elsewhere (.pt/.pth/.safetensors, loaded strictly with weights_only);
    a 1000-class ImageNet one is restricted to an ImageNet subset's classes."""
    from ..teachers import check_checkpoint, import_teacher, torchvision_teacher, torchvision_weights

    if bool(file) == bool(teacher_weights):
        raise UserError("teacher import needs exactly one of FILE or --teacher-weights NAME")
    spec, arch, dev = _teacher_arguments(dataset, arch, classes, device)
    if file:
        check_checkpoint(file, spec, arch)
    else:
        torchvision_weights(arch, teacher_weights)
    source = _teacher_data(dataset, spec, data_root, download, need_data=False)
    if file:
        _, card = import_teacher(file, spec, arch, dev, source)
    else:
        _, card = torchvision_teacher(spec, arch, teacher_weights, dev, source)
    _print_card(card)
