"""Atomic checkpoint files and the RNG state a bit-identical resume needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> None:
    """Write to a temporary file and rename, so an interruption never leaves a torn checkpoint (the
    temporary name is per process, so concurrent writers of one cache file never collide)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """`save_atomic` for a text file (a teacher's card): a kill leaves the old file or the new one, never half."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint written by `save_atomic` onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=False)


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """Global CPU/CUDA RNG states plus the run's own generator."""
    state = {"cpu": torch.get_rng_state(), "generator": generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], generator: torch.Generator) -> None:
    """Inverse of `rng_state`."""
    torch.set_rng_state(state["cpu"])
    generator.set_state(state["generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
