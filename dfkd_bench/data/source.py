"""A dataset at one data root: its counted train size, a streamed train split and the cached test split."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision.datasets.folder import default_loader
from torchvision.transforms import v2

from ..errors import UserError
from .spec import DatasetSpec
from .split import EvalSplit, open_cached_split, read_cache_meta, write_cached_split

Progress = Callable[[int, int], None]


class DataWarning(UserWarning):
    """Something about the data a user should know, that does not stop a run (the CLI prints one line)."""


def cache_dir() -> Path:
    """$DFKD_BENCH_CACHE, default ~/.cache/dfkd-bench (teachers and test-split caches live here)."""
    return Path(os.environ.get("DFKD_BENCH_CACHE", Path.home() / ".cache" / "dfkd-bench"))


def loader_workers() -> int:
    """DataLoader worker processes: up to 8, one per core ($DFKD_BENCH_WORKERS overrides)."""
    if "DFKD_BENCH_WORKERS" in os.environ:
        return max(0, int(os.environ["DFKD_BENCH_WORKERS"]))
    return min(8, os.cpu_count() or 1)


def train_transform(spec: DatasetSpec) -> v2.Transform:
    """The standard teacher augmentation, producing uint8 CHW tensors: crop with padding and flip at
    32 px, RandomResizedCrop and flip from 64 px up."""
    size = spec.input_size
    crop = v2.RandomCrop(size, padding=size // 8) if size <= 32 else v2.RandomResizedCrop(size, antialias=True)
    steps: list[v2.Transform] = [v2.PILToTensor(), crop]
    if spec.hflip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def eval_transform(spec: DatasetSpec) -> v2.Transform:
    """Test preprocessing to uint8 at `input_size`: resize the shorter side (to `eval_resize` when the
    dataset has one, e.g. 256 for ImageNet) and centre-crop."""
    size = spec.input_size
    return v2.Compose([v2.PILToTensor(), v2.Resize(spec.eval_resize or size, antialias=True), v2.CenterCrop(size)])


class UnreadableImage(UserError):
    """An image file that cannot be decoded. A DataLoader worker re-raises it with the worker's
    traceback as its message; the constructor keeps only the original one line."""

    def __init__(self, message: str) -> None:
        marker = f"{type(self).__name__}: "
        super().__init__(message.rsplit(marker, 1)[-1] if marker in message else message)


class FileListDataset(Dataset):
    """(path, label) samples read with torchvision's image loader (RGB, whatever the file's mode)."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Callable[[Any], torch.Tensor]) -> None:
        self.samples, self.transform = list(samples), transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        try:
            image = default_loader(path)
        except (OSError, SyntaxError, ValueError) as exc:
            raise UnreadableImage(f"{path} is not a readable image ({type(exc).__name__}: {str(exc)[:80]}); "
                                  f"replace or remove it") from None
        return self.transform(image), label


class ArrayDataset(Dataset):
    """uint8 images held as an (N, H, W, C) array (CIFAR's pickles), one CHW tensor an item."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = torch.from_numpy(self.images[index]).permute(2, 0, 1)
        return self.transform(image), int(self.labels[index])


def evenly_spaced(count: int, limit: int | None) -> list[int]:
    """`limit` indices spread over range(count) (all of them without a limit), so a subset of a
    class-sorted split still covers every class."""
    if limit is None or limit >= count:
        return list(range(count))
    return np.linspace(0, count - 1, limit).round().astype(int).tolist()


class DataSource:
    """One dataset at one root. Subclasses say where the files are (`train_dataset`, `test_dataset`,
    `count_train`); this class counts, streams, caches and warns the same way for all of them."""

    def __init__(self, spec: DatasetSpec, root: Path | None) -> None:
        self.spec, self.root = spec, root

    @property
    def wnids(self) -> tuple[str, ...]:
        """ImageNet synset ids of the classes, in class-index order (empty when not ImageNet classes)."""
        return self.spec.wnids

    def count_train(self) -> int | None:
        """Number of train images at the root (None when the root has no train split)."""
        raise NotImplementedError

    @cached_property
    def train_size(self) -> int:
        """The real train-set size that sets the budget: counted from the root, checked against the
        known size (a mismatch warns and the count is used)."""
        counted = self.count_train()
        known = self.spec.train_size
        if counted is None:
            warnings.warn(f"{self.spec.name}: no train split under {self.root}; using the known train size "
                          f"{known} for the budget", DataWarning, stacklevel=2)
            return known
        if counted != known:
            warnings.warn(f"{self.spec.name}: counted {counted} train images under {self.root}, the standard "
                          f"split has {known}; the budget uses {counted}", DataWarning, stacklevel=2)
        return counted

    def in_memory_train(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The train split as in-memory [0,1] tensors where a dataset is that small (digits), else None."""
        return None

    def train_dataset(self) -> Dataset:
        """The train split with the standard augmentation (uint8 CHW items)."""
        raise NotImplementedError

    def test_dataset(self) -> Dataset:
        """The test split preprocessed to the evaluation size (uint8 CHW items)."""
        raise NotImplementedError

    def train_loader(self, batch_size: int, seed: int, pin_memory: bool = False) -> DataLoader:
        """Shuffled, augmented uint8 train batches streamed by worker processes."""
        workers = loader_workers()
        dataset = self.train_dataset()
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                          num_workers=workers, pin_memory=pin_memory, persistent_workers=workers > 0,
                          generator=torch.Generator().manual_seed(seed))

    def cache_key(self, limit: int | None) -> dict[str, Any]:
        """What identifies a test-split cache: dataset, root, class list, evaluation size, subset."""
        return {"dataset": self.spec.name, "root": str(self.root), "classes": list(self.wnids) or self.spec.num_classes,
                "size": self.spec.input_size, "resize": self.spec.eval_resize, "limit": limit}

    def cache_folder(self, limit: int | None) -> Path:
        key = json.dumps(self.cache_key(limit), sort_keys=True)
        digest = hashlib.sha256(key.encode()).hexdigest()[:16]
        return cache_dir() / "splits" / f"{self.spec.name}-{self.spec.input_size}px-{digest}"

    def test_split(self, limit: int | None = None, progress: Progress | None = None) -> EvalSplit:
        """The test split as uint8 at the evaluation size. Read once through a DataLoader (workers,
        pinned memory) and cached memory-mapped under $DFKD_BENCH_CACHE; later calls read the cache,
        which is verified by its key and image count. `limit` takes an evenly spaced subset."""
        dataset = self.test_dataset()
        indices = evenly_spaced(len(dataset), limit)
        if limit is not None:
            dataset = torch.utils.data.Subset(dataset, indices)
        folder = self.cache_folder(limit)
        meta = read_cache_meta(folder)
        if meta and meta.get("count") == len(indices) and meta.get("key") == self.cache_key(limit):
            try:
                return open_cached_split(folder)
            except (OSError, ValueError):
                pass
        size = self.spec.input_size
        workers = loader_workers()
        loader = DataLoader(dataset, batch_size=256, shuffle=False, num_workers=workers,
                            pin_memory=torch.cuda.is_available(), persistent_workers=False)
        return write_cached_split(folder, loader, len(indices), (self.spec.in_chans, size, size),
                                  {"key": self.cache_key(limit)}, progress)
