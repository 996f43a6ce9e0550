"""The synthetic bank: every kept image, as uint8 at its native resolution, in memory on the run's device."""

from __future__ import annotations

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
        """
        counts = torch.tensor([self._count[r] for r in self.resolutions])
        gen_device = generator.device if generator is not None else self.device
        picks = torch.randint(0, int(counts.sum()), (batch_size,), generator=generator, device=gen_device)
        picks = picks.to(self.device)
        if len(counts) == 1:
            res = self.resolutions[0]
            groups = [(to_float(self._images[res][picks]), self._labels[res][picks])]
        else:
            groups = []
            offsets = (torch.cumsum(counts, 0) - counts).tolist()
            for res, start, count in zip(self.resolutions, offsets, counts.tolist()):
                idx = picks[(picks >= start) & (picks < start + count)] - start
                if idx.numel():
                    groups.append((to_float(self._images[res][idx]), self._labels[res][idx]))
        if size is None:
            return groups
        x = torch.cat([resize(g[0], size) for g in groups])
        y = torch.cat([g[1] for g in groups])
        return [(x, y)]

    def state_dict(self) -> dict:
        return {"images": {r: self.images(r).cpu() for r in self.resolutions},
                "labels": {r: self.labels(r).cpu() for r in self.resolutions}}

    def load_state_dict(self, state: dict) -> None:
        self._images = {int(r): t.to(self.device) for r, t in state["images"].items()}
        self._labels = {int(r): t.to(self.device) for r, t in state["labels"].items()}
        self._count = {int(r): t.shape[0] for r, t in state["labels"].items()}


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize to size x size (antialiased when shrinking); a no-op at the same size."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    shrinking = images.shape[-1] > size
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=shrinking)
