"""Dataset specs: what a method and the engine need to know about a dataset, and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..registry import Registry


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset; `load` returns the real (train, test) splits as tensors."""

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    default_teacher: str
    default_student: str
    hflip: bool = True
    needs_data_root: bool = False
    description: str = ""
    loader: Callable[["DatasetSpec", Path | None], "RealData"] | None = field(default=None, repr=False, compare=False)

    def load(self, data_root: str | Path | None = None) -> "RealData":
        """Load the real splits (images in [0,1], float32, at `input_size`)."""
        if self.loader is None:
            raise NotImplementedError(f"dataset {self.name} has no loader")
        return self.loader(self, Path(data_root) if data_root else None)


@dataclass
class RealData:
    """Real images in [0,1] (N, C, H, W) float32 and integer labels, train and test."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_dataset(name: str) -> DatasetSpec:
    """Look up a dataset spec by name (error lists the choices)."""
    return DATASETS.get(name)
