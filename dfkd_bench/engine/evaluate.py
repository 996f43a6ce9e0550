"""Accuracy on the real test split, streamed a batch at a time (no float copy of the split)."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn as nn

from ..data.split import EvalSplit
from .augment import Normalize


BATCH_FLOAT_BYTES = 64 << 20  # an evaluation batch holds at most 64 MB of float images (111 at 224 px)


def eval_batch_size(image_shape: tuple[int, ...], cap: int = 500) -> int:
    """Images per evaluation batch: up to `cap`, fewer for large images, so memory stays near one batch."""
    per_image = 4 * math.prod(image_shape)
    return max(1, min(cap, BATCH_FLOAT_BYTES // per_image))


def accuracy(model: nn.Module, split: EvalSplit, normalize: Normalize, batch_size: int | None = None,
             channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> float:
    """Top-1 accuracy in percent on the model's device; the model is put in eval mode and restored.

    Correct counts accumulate on the device, so the loop reads the device once, at the end.
    """
    correct = correct_predictions(model, split, normalize, batch_size, channels_last, amp_dtype)
    return 100.0 * correct.item() / max(1, len(split))


@torch.no_grad()
def correct_predictions(model: nn.Module, split: EvalSplit, normalize: Normalize, batch_size: int | None = None,
                        channels_last: bool = False, amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """How many of the split's images the model classifies right, as a device tensor (a process group
    sums its ranks' shards of the split before reading it)."""
    device = next(itertools.chain(model.parameters(), model.buffers()), torch.empty(0)).device
    batch_size = batch_size or eval_batch_size(split.shape[1:])
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in split.batches(batch_size, device):
        x = normalize(images)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(x)
        correct += (logits.argmax(1) == labels).sum()
        del images, x, logits
    model.train(was_training)
    return correct
