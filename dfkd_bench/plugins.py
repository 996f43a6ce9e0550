"""The method registry and method discovery: the built-in `methods/` folder, the entry-point group
`dfkd_bench.methods`, and single plugin files."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Callable, TypeVar

from .errors import UserError
from .registry import Registry

ENTRY_POINT_GROUP = "dfkd_bench.methods"
M = TypeVar("M", bound=type)


def _discover() -> None:
    """Import every built-in method module, then every installed entry point."""
    package = importlib.import_module("dfkd_bench.methods")
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"dfkd_bench.methods.{info.name}")
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        ep.load()


METHODS: Registry[type] = Registry("method", loader=_discover)


def register_method(name: str, description: str = "") -> Callable[[M], M]:
    """Class decorator: register a `Method` subclass under `name` and set its `name` attribute."""

    def decorator(cls: M) -> M:
        cls.name = name
        METHODS.add(name, cls, description)
        return cls

    return decorator


def load_plugin(path: str | Path) -> None:
    """Import one Python file so the methods it registers become available."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--plugin {path}: no such file")
    module_name = f"dfkd_bench_plugin_{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"--plugin {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except UserError:
        raise
    except Exception as exc:  # a broken plugin is the user's input: report it on one line
        raise UserError(f"--plugin {path} failed to import: {type(exc).__name__}: {exc}") from exc
