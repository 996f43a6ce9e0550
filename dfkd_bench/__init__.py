"""dfkd-bench: a benchmark suite for data-free knowledge distillation."""

__version__ = "0.3.0"

from .config import MethodHparams, RunConfig  # noqa: E402
from .engine.method import Method, MethodContext, SyntheticBatch  # noqa: E402
from .errors import UserError  # noqa: E402
from .plugins import METHODS, load_plugin, register_method  # noqa: E402
from .runner import run  # noqa: E402

__all__ = ["__version__", "Method", "MethodContext", "MethodHparams", "RunConfig", "SyntheticBatch",
           "UserError", "METHODS", "load_plugin", "register_method", "run"]
