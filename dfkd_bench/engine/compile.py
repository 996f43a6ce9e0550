"""`--compile`: torch.compile of a run's teacher, student and generator, falling back to eager mode."""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from .method import Method, MethodContext


def compile_module(module: nn.Module, name: str, log: Callable[[str], None], backend: str = "inductor") -> bool:
    """Compile `module` in place (its state_dict keys and hooks stay as they are); on failure say so in
    one line and leave it eager. Returns whether it was compiled."""
    try:
        module.compile(backend=backend)
    except Exception as exc:  # a platform without a compiler, an unsupported module
        log(f"--compile: {name} runs eagerly ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
        return False
    return True


def compile_run(ctx: MethodContext, method: Method, log: Callable[[str], None], backend: str = "inductor") -> list[str]:
    """Compile the teacher, the student and the modules the method declares (`compilable_modules`: its
    generator, if any); returns what was compiled.

    Dynamo's caches are reset first, and hooks are guarded, so the forward hooks a run adds to the
    shared teacher (BN statistics, feature taps) are traced into its graphs instead of a previous
    run's; a graph that fails to compile later, at its first call, runs eagerly (suppress_errors).
    """
    import torch._dynamo

    torch._dynamo.reset()
    torch._dynamo.config.suppress_errors = True
    torch._dynamo.config.skip_nnmodule_hook_guards = False
    modules: dict[str, Any] = {"teacher": ctx.teacher, "student": ctx.student, **method.compilable_modules()}
    return [name for name, module in modules.items()
            if isinstance(module, nn.Module) and compile_module(module, name, log, backend)]

