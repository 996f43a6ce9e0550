"""Everything a method file may use, in one public module: the method base classes and their hooks, the
shared losses, label layouts, generators, schedules, the plugin registry and the one-line error.

Method files (`methods/`, plugins, the README's examples) import from here only (or from the engine,
or build on another method); `tests/test_method_imports.py` holds them to it, so a method can never
reach the code that drives runs.
"""

from .config import MethodHparams
from .data.spec import DatasetSpec
from .engine import *  # noqa: F401,F403  (the engine's public names, listed in its __all__)
from .engine import __all__ as _engine_names
from .engine.generators import GENERATOR_KINDS, generator_kind
from .engine.synthesis import student_logits, teacher_terms
from .errors import UserError
from .plugins import register_method

__all__ = [*_engine_names, "MethodHparams", "DatasetSpec", "GENERATOR_KINDS", "generator_kind", "student_logits",
           "teacher_terms", "UserError", "register_method"]
