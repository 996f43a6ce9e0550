"""Out-of-memory errors: recognising them (CUDA and the CPU allocator) and freeing what a failed run held."""

from __future__ import annotations

import gc

import torch

OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's OutOfMemoryError and for allocator RuntimeErrors that say memory ran out."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(m in str(exc).lower() for m in OOM_MESSAGES)


def free_device_memory(device: torch.device) -> None:
    """Collect the failed run's tensors and hand the CUDA cache back, so a retry starts with free memory."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
