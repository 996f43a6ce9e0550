"""Reading model weights from elsewhere: .pt/.pth (torch, weights_only) and .safetensors, unwrapped."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .errors import UserError

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict")
PREFIXES = ("module.", "model.")
SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")


def _unwrap(blob: object, path: Path) -> dict[str, torch.Tensor]:
    """Descend through {"state_dict": ...}/{"model": ...} wrappers to the tensor mapping."""
    for _ in range(3):
        if isinstance(blob, dict) and not any(isinstance(v, torch.Tensor) for v in blob.values()):
            inner = next((blob[k] for k in WRAPPER_KEYS if isinstance(blob.get(k), dict)), None)
            if inner is None:
                break
            blob = inner
    if not isinstance(blob, dict) or not blob or not all(isinstance(v, torch.Tensor) for v in blob.values()):
        raise UserError(f"{path} holds no state dict (expected tensors by name, possibly inside a "
                        f"'state_dict' or 'model' entry)")
    return blob


def strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the 'module.' (DataParallel/DDP) and 'model.' (Lightning-style) prefixes every key shares."""
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if state and all(k.startswith(prefix) for k in state):
                state = {k[len(prefix):]: v for k, v in state.items()}
                changed = True
    return state


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a checkpoint file, loaded safely (weights_only / safetensors); one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            blob: object = load_file(str(path), device="cpu")
        else:
            with warnings.catch_warnings():  # a refused file is one error line, not a warning first
                warnings.simplefilter("ignore")
                blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any reader failure means the same thing to a user: not a checkpoint
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch (weights_only)"
        raise UserError(f"{path} is not a readable {kind} checkpoint ({type(exc).__name__}); "
                        f"expected one of {', '.join(SUFFIXES)}") from None
    return strip_prefixes(_unwrap(blob, path))
