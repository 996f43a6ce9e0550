"""Listing commands (methods, datasets, models, teachers, the shipped sweep grids) and `embed-labels`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from ..data import DATASETS
from ..errors import UserError
from ..models import MODELS, model_info, parameter_count
from ..plugins import METHODS
from .common import cli, console


def listing(entries: list[Any]) -> None:
    width = max((len(e.name) for e in entries), default=0)
    for e in entries:
        click.echo(f"{e.name:<{width}}  {e.description}")


@cli.command("methods")
def methods_cmd() -> None:
    """List the registered DFKD methods."""
    listing(METHODS.entries())


@cli.command("datasets")
def datasets_cmd() -> None:
    """List the registered datasets."""
    listing(DATASETS.entries())


@cli.command("models")
def models_cmd() -> None:
    """List the model zoo: parameters at 10 classes, the input size each is meant for, family, description."""
    infos = [model_info(name) for name in MODELS.names()]
    params = [f"{parameter_count(i.name, 10) / 1e6:.2f}M" for i in infos]
    width = max([len("name")] + [len(i.name) for i in infos])
    click.echo(f"{'name':<{width}}  {'params':>7}  {'input':>5}  {'family':<8}  description")
    for info, count in zip(infos, params):
        click.echo(f"{info.name:<{width}}  {count:>7}  {info.input_size:>5}  {info.family:<8}  {info.description}")


@cli.command("sweeps")
def sweeps_cmd() -> None:
    """List the sweep grids shipped with the package, with their run counts (`dfkd-bench sweep NAME`)."""
    from ..sweep import describe_grid, load_sweep, shipped_grids

    grids = shipped_grids()
    width = max((len(name) for name in grids), default=0)
    for name, path in sorted(grids.items()):
        console.print(f"{name:<{width}}  {len(load_sweep(path)):>5} runs  {describe_grid(path)}", markup=False)


@cli.command("teachers")
def teachers_cmd() -> None:
    """List the cached teachers with their cards (newest first)."""
    from ..teachers import list_teachers, teachers_dir

    cards = list_teachers()
    if not cards:
        console.print(f"no cached teachers in {teachers_dir()}")
        return
    table = Table(title=f"cached teachers ({teachers_dir()})")
    for col in ["dataset", "arch", "classes", "test acc", "source", "seed", "smoke", "created", "sha256", "file"]:
        table.add_column(col)
    for c in cards:
        acc = "-" if c.test_acc is None else f"{c.test_acc:.2f}"
        source = c.source + (f" (from {c.restricted_from})" if c.restricted_from else "")
        table.add_row(c.dataset, c.arch, str(c.num_classes), acc, source, str(c.seed), "yes" if c.smoke else "",
                      c.created_at, c.sha256[:12], Path(c.path).name)
    console.print(table)


@cli.command("embed-labels")
@click.option("--dataset", default=None, help="Dataset whose class names to embed.")
@click.option("--classes", "classes_file", default=None, type=click.Path(), help="File with one class name a line.")
@click.option("--prompt", default=None, help="Prompt template with {} for the class name.")
@click.option("--out", "out_file", required=True, type=click.Path(), help="Output .npz file.")
def embed_labels_cmd(dataset: str | None, classes_file: str | None, prompt: str | None, out_file: str) -> None:
    """Compute label-text embeddings with all-MiniLM-L6-v2 (needs the `text` extra)."""
    from .. import label_embeddings as le

    if bool(dataset) == bool(classes_file):
        raise UserError("embed-labels needs exactly one of --dataset NAME or --classes FILE")
    names = le.read_class_names(classes_file) if classes_file else list(DATASETS.get(dataset).class_names)
    emb = le.compute_label_embeddings(names, prompt or le.default_prompt(dataset))
    le.save_label_embeddings(emb, out_file)
    console.print(f"{emb.num_classes} label embeddings ({emb.dim}-d, prompt {emb.prompt!r}) -> {out_file}")
