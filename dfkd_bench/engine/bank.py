"""The synthetic bank: every kept image, as uint8 at its native resolution, in memory on the run's
device, or in host memory once it outgrows a device budget."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

GIB = 1 << 30


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0,1] floats to uint8 (round to nearest), the same quantisation a PNG would apply; uint8 stays as is."""
    if images.dtype == torch.uint8:
        return images.detach()
    return images.detach().clamp(0, 1).mul(255).round_().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 back to [0,1] floats."""
    return images.float().div_(255)


def bank_gpu_budget(gb: float | None) -> int | None:
    """A --bank-gpu-gb value (GiB) as the byte budget `SyntheticBank` takes; None stays None (no limit)."""
    if gb is None:
        return None
    if not math.isfinite(gb) or gb < 0:
        raise ValueError(f"--bank-gpu-gb must be a finite number of GiB >= 0, got {gb}")
    return int(gb * GIB)


class SyntheticBank:
    """Images grouped by resolution (MUSE stores several), each group one uint8 tensor plus labels.

    Storage grows geometrically (amortised O(1) appends, no full copy every round); only the filled
    part is ever read or saved.

    Two tiers. "device": everything on the run's device while the images' allocation (labels not
    counted) fits `device_budget_bytes` (None: no limit); growth is capped so the groups' allocations
    never pass it. "host": the first `add` that would need more moves every group to plain CPU memory
    for good, and growth goes on there. Host storage is not pinned: `sample` gathers on the CPU into a
    small pinned staging tensor, so only that tensor is ever read by the copy engine.
    """

    def __init__(self, device: torch.device | str = "cpu", device_budget_bytes: int | None = None) -> None:
        if device_budget_bytes is not None and device_budget_bytes < 0:
            raise ValueError(f"device_budget_bytes must be >= 0 or None, got {device_budget_bytes}")
        self.device = torch.device(device)
        self.device_budget_bytes = device_budget_bytes
        self.spilled_at: int | None = None  # images stored when the bank moved to the host tier
        self._on_host = False
        self._pin = self.device.type == "cuda" and torch.cuda.is_available()
        self._images: dict[int, torch.Tensor] = {}
        self._labels: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}
        self._rng: np.random.Generator | None = None  # the multi-resolution split (host side)
        self._host_gen: torch.Generator | None = None  # host-tier indices when the run's generator isn't on the CPU

    def __len__(self) -> int:
        return sum(self._count.values())

    @property
    def resolutions(self) -> list[int]:
        return sorted(self._count)

    @property
    def tier(self) -> str:
        """Where the images are stored: "device" (the run's device) or "host" (CPU memory)."""
        return "host" if self._on_host else "device"

    @property
    def storage_device(self) -> torch.device:
        """The device holding the stored images and labels."""
        return torch.device("cpu") if self._on_host else self.device

    def nbytes(self) -> int:
        """Memory held by the stored images."""
        return sum(self.images(r).numel() for r in self._count)

    def allocated_bytes(self) -> int:
        """Memory allocated for images, filled or not: what the device budget caps (rows grow by doubling)."""
        return sum(t.numel() for t in self._images.values())

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Append a batch of [0,1] images (N, C, r, r), or images already quantised to uint8, with their labels."""
        res, n = int(images.shape[-1]), images.shape[0]
        count = self._count.get(res, 0)
        if res not in self._images or count + n > self._images[res].shape[0]:
            self._grow(res, count, n, tuple(images.shape[1:]))
        self._images[res][count:count + n] = to_uint8(images).to(self.storage_device)
        self._labels[res][count:count + n] = labels.detach().to(self.storage_device, torch.long)
        self._count[res] = count + n

    def _grow(self, res: int, count: int, n: int, row_shape: tuple[int, ...]) -> None:
        """Reallocate group `res` to hold at least count + n images, spilling to the host first when
        the device tier can't."""
        capacity = self._capacity(res, count + n, 2 * count, math.prod(row_shape))
        if capacity is None:
            self._spill()
            capacity = max(count + n, 2 * count)
        grown_x = torch.empty((capacity, *row_shape), dtype=torch.uint8, device=self.storage_device)
        grown_y = torch.empty(capacity, dtype=torch.long, device=self.storage_device)
        if count:
            grown_x[:count] = self._images[res][:count]
            grown_y[:count] = self._labels[res][:count]
        self._images[res], self._labels[res] = grown_x, grown_y

    def _capacity(self, res: int, needed: int, doubled: int, row_bytes: int) -> int | None:
        """Rows to allocate for group `res`: `doubled` (or `needed` if more), capped on the device tier
        so all groups' allocations stay within the budget; None when even `needed` would not fit."""
        if self._on_host or self.device_budget_bytes is None:
            return max(needed, doubled)
        others = sum(t.numel() for r, t in self._images.items() if r != res)
        room = (self.device_budget_bytes - others) // row_bytes
        return max(needed, min(doubled, room)) if needed <= room else None

    def _spill(self) -> None:
        """Move every group to host memory, for good; one device-to-host copy of the filled parts."""
        self.spilled_at = len(self)
        self._on_host = True
        self._images = {r: self.images(r).cpu() for r in self._count}
        self._labels = {r: self.labels(r).cpu() for r in self._count}

    def images(self, resolution: int) -> torch.Tensor:
        """All stored images of one resolution, uint8."""
        return self._images[resolution][:self._count[resolution]]

    def labels(self, resolution: int) -> torch.Tensor:
        return self._labels[resolution][:self._count[resolution]]

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Draw `batch_size` images uniformly (with replacement) across resolutions.

        Returns float [0,1] groups (images, labels) on the run's device; with `size` every group is
        resized (bilinear) to size x size and the groups are merged into one.

        Nothing here reads the device. One resolution: indices from `generator` over the whole
        bank. Several: how many images come from each resolution is multinomial in the stored
        counts (what uniform sampling over all images gives); that split is drawn on the host by
        the bank's own numpy generator (seeded from `generator.initial_seed()` on first use, saved
        in `state_dict`), so the group sizes are host ints; the indices within each resolution then
        come from `generator`. On the host tier the indices must be on the CPU: a CPU generator
        draws them (the same images as the device tier), otherwise the bank's own host generator
        does (see `_host_generator`), so with a CUDA generator the stream differs from the device
        tier's and the run's generator is no longer advanced by sampling.
        """
        resolutions = self.resolutions
        if len(resolutions) == 1:
            groups = [self._draw(resolutions[0], batch_size, generator)]
        else:
            split = self._split(batch_size, resolutions, generator)
            groups = [self._draw(res, n, generator) for res, n in zip(resolutions, split) if n]
        if size is None:
            return groups
        x = torch.cat([resize(g[0], size) for g in groups])
        y = torch.cat([g[1] for g in groups])
        return [(x, y)]

    def _draw(self, res: int, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` uniform picks from group `res`, as float images and labels on the run's device."""
        idx = self._indices(self._count[res], n, generator)
        return to_float(self._take(self._images[res], idx)), self._take(self._labels[res], idx)

    def _indices(self, count: int, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """`n` indices below `count`, on the storage device."""
        if self._on_host:
            return torch.randint(0, count, (n,), generator=self._host_generator(generator))
        gen_device = generator.device if generator is not None else self.device
        return torch.randint(0, count, (n,), generator=generator, device=gen_device).to(self.device)

    def _host_generator(self, generator: torch.Generator | None) -> torch.Generator | None:
        """The generator for host-tier indices: `generator` itself when it is a CPU one (None: the
        global CPU one), else the bank's own CPU generator, seeded from `generator.initial_seed()` on
        first use and saved in `state_dict` (drawing on the device and copying back would sync)."""
        if generator is None or generator.device.type == "cpu":
            return generator
        if self._host_gen is None:
            self._host_gen = torch.Generator().manual_seed(generator.initial_seed())
        return self._host_gen

    def _take(self, source: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Rows `idx` of `source`, on the run's device. Host tier: gathered on the CPU (uint8, so 4x
        less traffic than floats) into a fresh staging tensor, pinned on CUDA, then copied without
        blocking. Fresh per call rather than a reused buffer: PyTorch's pinned-memory cache records
        the copy's event and hands the block out again only once that copy finished."""
        if not self._on_host:
            return source[idx]
        staged = torch.empty((idx.shape[0], *source.shape[1:]), dtype=source.dtype, pin_memory=self._pin)
        torch.index_select(source, 0, idx, out=staged)
        return staged.to(self.device, non_blocking=True)

    def _split(self, batch_size: int, resolutions: list[int], generator: torch.Generator | None) -> list[int]:
        """Multinomial(batch_size, stored count / total) over `resolutions`, drawn on the host in one
        call (no per-sample loop)."""
        if self._rng is None:
            self._rng = np.random.default_rng(generator.initial_seed() if generator is not None
                                              else torch.initial_seed())
        counts = np.array([self._count[r] for r in resolutions], dtype=np.float64)
        return self._rng.multinomial(batch_size, counts / counts.sum()).tolist()

    def state_dict(self) -> dict:
        state = {"images": {r: self.images(r).cpu() for r in self.resolutions},
                 "labels": {r: self.labels(r).cpu() for r in self.resolutions}}
        if self._rng is not None:
            state["split_rng"] = self._rng.bit_generator.state
        if self._host_gen is not None:
            state["host_rng"] = self._host_gen.get_state()
        if self.spilled_at is not None:
            state["spilled_at"] = self.spilled_at
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict`, choosing the tier afresh from this bank's budget."""
        images = {int(r): t for r, t in state["images"].items()}
        budget = self.device_budget_bytes
        self._on_host = budget is not None and sum(t.numel() for t in images.values()) > budget
        self._images = {r: t.to(self.storage_device) for r, t in images.items()}
        self._labels = {int(r): t.to(self.storage_device) for r, t in state["labels"].items()}
        self._count = {int(r): t.shape[0] for r, t in state["labels"].items()}
        self.spilled_at = state.get("spilled_at", len(self)) if self._on_host else None
        self._rng = None
        if state.get("split_rng") is not None:
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = state["split_rng"]
        self._host_gen = None
        if state.get("host_rng") is not None:
            self._host_gen = torch.Generator()
            self._host_gen.set_state(state["host_rng"])


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (antialiased when shrinking); a no-op at the same size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
