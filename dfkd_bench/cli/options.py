"""The click flags of the run options, generated from `RunConfig`'s schema (`dfkd_bench.options`): `run`
takes them all, `sweep` the machine ones, other commands the data ones; old spellings are hidden flags
that warn."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import click

from ..errors import UserError
from ..options import DEFAULTS, OPTIONS, GridOptions, deprecated_names, flag_name
from .common import warn_deprecated

MACHINE = tuple(name for name, opt in OPTIONS.items() if opt.machine)
DATA = ("data_root", "classes")


def option_flags(names: Iterable[str] = tuple(OPTIONS)) -> Callable[[Any], Any]:
    """A decorator adding the flags of the named options (and their hidden old spellings), in order."""
    names = tuple(names)
    old = {spelling: name for spelling, name in deprecated_names("flag").items() if name in names}

    def decorate(command: Any) -> Any:
        for spelling, name in reversed(old.items()):
            command = click.option(spelling, _old_param(spelling), default=None, hidden=True)(command)
        for name in reversed(names):
            command = _flag(name)(command)
        return command
    return decorate


def data_options(command: Any) -> Any:
    """--data-root and --classes (from the schema) and --download, for every command that reads a dataset."""
    command = click.option("--download", is_flag=True,
                           help="Fetch CIFAR with torchvision's downloader first (needs a network).")(command)
    return option_flags(DATA)(command)


def _flag(name: str) -> Callable[[Any], Any]:
    opt = OPTIONS[name]
    if opt.kind is bool:
        return click.option(flag_name(name), name, is_flag=True, default=None, help=opt.help)
    kind: Any = click.Choice(opt.choices) if opt.choices else str if opt.sweeps or opt.kind is tuple else opt.kind
    default = DEFAULTS[name]
    help_text = opt.help + (" A list sweeps." if opt.sweeps and opt.kind is not tuple else "")
    return click.option(flag_name(name), name, default=None, type=kind, help=help_text,
                        show_default=str(default) if default not in (None, False) else False)


def _old_param(spelling: str) -> str:
    return "old_" + spelling.lstrip("-").replace("-", "_")


def chosen_options(params: dict[str, Any], names: Iterable[str] = tuple(OPTIONS)) -> GridOptions:
    """Take the named options' flags out of a command's parameters (`params` loses them) into a
    `GridOptions`; an old spelling is used with a note, and refused next to its new one."""
    chosen = GridOptions()
    given = {name: params.pop(name, None) for name in names}
    for spelling, name in deprecated_names("flag").items():
        value = params.pop(_old_param(spelling), None)
        if value is None or name not in given:
            continue
        if given[name] is not None:
            raise UserError(f"{spelling} is the deprecated spelling of {flag_name(name)}: give only {flag_name(name)}")
        warn_deprecated(spelling, flag_name(name))
        given[name] = value
    for name, value in given.items():
        chosen.add(name, None if value is False else value, "")
    return chosen


def machine_values(params: dict[str, Any]) -> dict[str, Any]:
    """`sweep`'s machine flags that were given, as raw values (the sweep file's are overridden by them)."""
    return {name: value for name, value in ((n, params.pop(n, None)) for n in MACHINE) if value not in (None, False)}
