"""The synthetic bank: every kept image, as uint8 at its native resolution, in memory on the run's device."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0,1] floats to uint8 (round to nearest), the same quantisation a PNG would apply."""
    return images.detach().clamp(0, 1).mul(255).round_().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 back to [0,1] floats."""
    return images.float().div_(255)


class SyntheticBank:
    """Images grouped by resolution (MUSE stores several), each group one uint8 tensor plus labels.

    Storage grows geometrically (amortised O(1) appends, no full copy every round); only the filled
    part is ever read or saved.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self._images: dict[int, torch.Tensor] = {}
        self._labels: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}
        self._rng: np.random.Generator | None = None  # the multi-resolution split (host side)

    def __len__(self) -> int:
        return sum(self._count.values())

    @property
    def resolutions(self) -> list[int]:
        return sorted(self._count)

    def nbytes(self) -> int:
        """Memory held by the stored images."""
        return sum(self.images(r).numel() for r in self._count)

    def add(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        """Append a batch of [0,1] images (N, C, r, r) with their labels."""
        res, n = int(images.shape[-1]), images.shape[0]
        new_x, new_y = to_uint8(images).to(self.device), labels.detach().to(self.device, torch.long)
        count = self._count.get(res, 0)
        if res not in self._images or count + n > self._images[res].shape[0]:
            capacity = max(count + n, 2 * count)
            grown_x = torch.empty((capacity, *new_x.shape[1:]), dtype=torch.uint8, device=self.device)
            grown_y = torch.empty(capacity, dtype=torch.long, device=self.device)
            if count:
                grown_x[:count] = self._images[res][:count]
                grown_y[:count] = self._labels[res][:count]
            self._images[res], self._labels[res] = grown_x, grown_y
        self._images[res][count:count + n] = new_x
        self._labels[res][count:count + n] = new_y
        self._count[res] = count + n

    def images(self, resolution: int) -> torch.Tensor:
        """All stored images of one resolution, uint8."""
        return self._images[resolution][:self._count[resolution]]

    def labels(self, resolution: int) -> torch.Tensor:
        return self._labels[resolution][:self._count[resolution]]

    def sample(self, batch_size: int, generator: torch.Generator | None = None,
               size: int | None = None) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Draw `batch_size` images uniformly (with replacement) across resolutions.

        Returns float [0,1] groups (images, labels); with `size` every group is resized (bilinear)
        to size x size and the groups are merged into one.

        Nothing here reads the device. One resolution: indices from `generator` over the whole
        bank. Several: how many images come from each resolution is multinomial in the stored
        counts (what uniform sampling over all images gives); that split is drawn on the host by
        the bank's own numpy generator (seeded from `generator.initial_seed()` on first use, saved
        in `state_dict`), so the group sizes are host ints; the indices within each resolution then
        come from `generator` on its device.
        """
        resolutions = self.resolutions
        gen_device = generator.device if generator is not None else self.device
        if len(resolutions) == 1:
            res = resolutions[0]
            picks = torch.randint(0, self._count[res], (batch_size,), generator=generator, device=gen_device)
            picks = picks.to(self.device)
            groups = [(to_float(self._images[res][picks]), self._labels[res][picks])]
        else:
            groups = []
            for res, count in zip(resolutions, self._split(batch_size, resolutions, generator)):
                if count:
                    idx = torch.randint(0, self._count[res], (count,), generator=generator, device=gen_device)
                    idx = idx.to(self.device)
                    groups.append((to_float(self._images[res][idx]), self._labels[res][idx]))
        if size is None:
            return groups
        x = torch.cat([resize(g[0], size) for g in groups])
        y = torch.cat([g[1] for g in groups])
        return [(x, y)]

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
        return state

    def load_state_dict(self, state: dict) -> None:
        self._images = {int(r): t.to(self.device) for r, t in state["images"].items()}
        self._labels = {int(r): t.to(self.device) for r, t in state["labels"].items()}
        self._count = {int(r): t.shape[0] for r, t in state["labels"].items()}
        self._rng = None
        if state.get("split_rng") is not None:
            self._rng = np.random.default_rng()
            self._rng.bit_generator.state = state["split_rng"]


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (antialiased when shrinking); a no-op at the same size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
