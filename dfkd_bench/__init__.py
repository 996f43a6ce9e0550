"""dfkd-bench: a benchmark suite for data-free knowledge distillation.

The package face is lazy (PEP 562): `import dfkd_bench` loads no torch, and each public name below is
imported on first use, so `dfkd_bench.report` and the CLI's light commands stay light.
"""

from importlib import import_module, metadata
from typing import Any

try:
    __version__ = metadata.version("dfkd-bench")
except metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

_PUBLIC = {
    "MethodHparams": ".config", "RunConfig": ".options",
    "Method": ".engine.method", "MethodContext": ".engine.method", "SyntheticBatch": ".engine.method",
    "UserError": ".errors",
    "METHODS": ".plugins", "load_plugin": ".plugins", "register_method": ".plugins",
    "run": ".runner",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use (and keep it)."""
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_PUBLIC})
