"""The real test split as evaluation reads it: uint8 images streamed a batch at a time, never a float split."""

from __future__ import annotations

import json
import mmap
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch

PAGE = mmap.PAGESIZE


class EvalSplit:
    """Test images (N, C, H, W) with int64 labels.

    Images are uint8 (an in-memory tensor, or a read-only memory map of a cached .npy file) or, for
    the small in-memory `digits`, float in [0,1]. `batches` yields float [0,1] batches on the device;
    a memory-mapped split drops each batch's pages after reading it, so evaluating a 50k-image
    split holds about one batch in memory, not the split.
    """

    def __init__(self, images: torch.Tensor | np.ndarray, labels: torch.Tensor,
                 mapping: mmap.mmap | None = None, offset: int = 0) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} test images but {len(labels)} labels")
        self.images, self.labels = images, labels
        self._mapping, self._offset = mapping, offset

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * (1 if self.is_uint8 else 4)

    @property
    def is_uint8(self) -> bool:
        return self.images.dtype in (np.uint8, torch.uint8)

    @property
    def on_device(self) -> torch.device | None:
        """The device the images already live on (None for a memory-mapped file)."""
        return self.images.device if isinstance(self.images, torch.Tensor) else None

    def subset(self, count: int) -> "EvalSplit":
        """The first `count` images (tests and quick checks); labels and images stay aligned."""
        return self.part(0, count)

    def part(self, start: int, stop: int) -> "EvalSplit":
        """Images [start, stop) as a split of their own (a rank's shard), a view without a copy."""
        item = int(np.prod(self.shape[1:]))
        offset = self._offset + start * item if self._mapping is not None else self._offset
        return EvalSplit(self.images[start:stop], self.labels[start:stop], self._mapping, offset)

    def to(self, device: torch.device, max_bytes: int) -> "EvalSplit":
        """A copy resident on `device` when it fits in `max_bytes`; otherwise this split, streamed."""
        if self.nbytes > max_bytes:
            return self
        images = self.images if isinstance(self.images, torch.Tensor) else torch.from_numpy(np.array(self.images))
        return EvalSplit(images.to(device), self.labels.to(device))

    def _release(self, start: int, stop: int) -> None:
        """Tell the kernel the mapped pages of images[start:stop] are no longer needed."""
        if self._mapping is None:
            return
        item = int(np.prod(self.shape[1:]))
        first = (self._offset + start * item) // PAGE * PAGE
        last = self._offset + stop * item
        self._mapping.madvise(mmap.MADV_DONTNEED, first, last - first)

    def batches(self, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Float [0,1] image batches and their labels on `device`, in order."""
        cuda = device.type == "cuda"
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            chunk = self.images[start:stop]
            if isinstance(chunk, np.ndarray):
                chunk = torch.from_numpy(np.array(chunk))
                self._release(start, stop)
                if cuda:
                    chunk = chunk.pin_memory()
            x = chunk.to(device, non_blocking=True)
            x = x.float().div_(255) if x.dtype == torch.uint8 else x
            yield x, self.labels[start:stop].to(device, non_blocking=True)
            del chunk, x  # the next batch is read while nothing of this one is held


def _header(shape: tuple[int, ...]) -> dict[str, Any]:
    return {"descr": np.lib.format.dtype_to_descr(np.dtype(np.uint8)), "fortran_order": False, "shape": shape}


def open_cached_split(folder: Path) -> EvalSplit:
    """Memory-map a split written by `write_cached_split`."""
    fh = open(folder / "images.npy", "rb")
    try:
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_2_0 if version == (2, 0) else \
            np.lib.format.read_array_header_1_0
        shape, _, _ = read_header(fh)
        offset = fh.tell()
        mapping = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    finally:
        fh.close()
    images = np.frombuffer(mapping, dtype=np.uint8, count=int(np.prod(shape)), offset=offset).reshape(shape)
    labels = torch.from_numpy(np.load(folder / "labels.npy"))
    return EvalSplit(images, labels, mapping, offset)


def read_cache_meta(folder: Path) -> dict[str, Any] | None:
    """The cache's meta.json, or None when the cache is absent or unreadable."""
    try:
        return json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def write_cached_split(folder: Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int,
                       image_shape: tuple[int, int, int], meta: dict[str, Any],
                       progress: Callable[[int, int], None] | None = None) -> EvalSplit:
    """Write uint8 batches to folder/images.npy (sequential writes, no float copy), labels and
    meta.json, atomically (a temporary folder renamed at the end), then memory-map the result."""
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    labels = np.empty(count, dtype=np.int64)
    written = 0
    with open(tmp / "images.npy", "wb") as fh:
        np.lib.format.write_array_header_2_0(fh, _header((count, *image_shape)))
        for images, targets in batches:
            n = images.shape[0]
            if written + n > count or tuple(images.shape[1:]) != image_shape or images.dtype != torch.uint8:
                raise RuntimeError(f"test batch of shape {tuple(images.shape)} {images.dtype} does not fit the "
                                   f"cache of {count} x {image_shape} uint8")
            fh.write(images.contiguous().numpy().tobytes())
            labels[written:written + n] = targets.numpy()
            written += n
            if progress:
                progress(written, count)
    if written != count:
        raise RuntimeError(f"read {written} test images, expected {count}")
    np.save(tmp / "labels.npy", labels)
    (tmp / "meta.json").write_text(json.dumps({**meta, "count": count, "shape": [count, *image_shape]}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:  # a concurrent writer (another job-array task) put the same split there first
        shutil.rmtree(tmp, ignore_errors=True)
    return open_cached_split(folder)
