"""Accuracy on the real test split."""

from __future__ import annotations

import torch
import torch.nn as nn

from .augment import Normalize


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalize: Normalize,
             batch_size: int = 500, channels_last: bool = False) -> float:
    """Top-1 accuracy in percent; the model is put in eval mode and restored afterwards."""
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.long, device=labels.device)
    for start in range(0, images.shape[0], batch_size):
        x = normalize(images[start:start + batch_size])
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        correct += (model(x).argmax(1) == labels[start:start + batch_size]).sum()
    model.train(was_training)
    return 100.0 * correct.item() / max(1, labels.shape[0])
