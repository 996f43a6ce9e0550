"""Label layouts for a synthesis batch."""

from __future__ import annotations

import torch


def random_labels(n: int, num_classes: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Uniformly random labels (Fast, DeepInversion)."""
    return torch.randint(0, num_classes, (n,), generator=generator, device=_device_of(generator)).to(device)


def balanced_labels(n: int, num_classes: int, generator: torch.Generator | None = None,
                    device: torch.device | str = "cpu") -> torch.Tensor:
    """Each class floor(n/C) times in class order, the remainder drawn at random (NAYER, MUSE)."""
    repeats = torch.arange(num_classes).repeat(n // num_classes)
    rest = torch.randint(0, num_classes, (n - repeats.numel(),), generator=generator, device=_device_of(generator))
    return torch.cat([repeats, rest.cpu()]).to(device)


def _device_of(generator: torch.Generator | None) -> torch.device:
    """Draws must happen on the generator's device (a CUDA generator cannot drive a CPU randint)."""
    return generator.device if generator is not None else torch.device("cpu")
