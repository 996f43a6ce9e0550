"""Batched tensor augmentation and normalisation (no per-sample Python loops, runs on the bank's device)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import UserError


class Normalize(torch.nn.Module):
    """Subtract the dataset mean and divide by its std, per channel."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)


def random_flip(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Flip each image horizontally with probability 1/2."""
    mask = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
    return torch.where(mask.view(-1, 1, 1, 1), x.flip(3), x)


def random_crop(x: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crop of the original size from the zero-padded image, an independent offset per image."""
    if padding <= 0:
        return x
    n, _, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    oy = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), device=x.device, generator=generator)
    rows = (oy.view(n, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (ox.view(n, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chans = torch.arange(x.shape[1], device=x.device).view(1, -1, 1, 1)
    return padded[batch, chans, rows, cols]


def random_resized_crop(
    x: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Batched RandomResizedCrop via one affine grid per image (ImageNet-size student augmentation)."""
    n = x.shape[0]
    dev = x.device
    area = torch.empty(n, device=dev).uniform_(*scale, generator=generator)
    log_r = torch.empty(n, device=dev).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator)
    aspect = torch.exp(log_r)
    sw = torch.sqrt(area * aspect).clamp(max=1.0)
    sh = torch.sqrt(area / aspect).clamp(max=1.0)
    tx = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * (1 - sw)
    ty = (torch.rand(n, device=dev, generator=generator) * 2 - 1) * (1 - sh)
    theta = torch.zeros(n, 2, 3, device=dev, dtype=x.dtype)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = sw, tx, sh, ty
    grid = F.affine_grid(theta, (n, x.shape[1], size, size), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def student_augment(
    x: torch.Tensor, hflip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The standard DFKD student augmentation at the images' own size: crop with padding
    (4 px at 32, scaled with size) and flip for small images, RandomResizedCrop and flip from 64 px up."""
    size = x.shape[-1]
    if size >= 64:
        x = random_resized_crop(x, size, generator=generator)
    else:
        x = random_crop(x, max(1, round(size / 8)), generator=generator)
    return random_flip(x, generator) if hflip else x


PHASES = ("synthesis", "kd")


def default_augment(input_size: int, phase: str) -> str:
    """The references' augmentation per dataset size and phase: crop (pad 4) + flip at 32 px; at 64 px
    RandomCrop pad 4, flipped for KD only (NAYER, Tiny-ImageNet); from 112 px RandomResizedCrop +
    flip, scale 0.75-1 for synthesis (Fast, ImageNet) and the standard 0.08-1 for KD."""
    if input_size <= 32:
        return "crop:4+flip"
    if input_size < 112:
        return "crop:4" if phase == "synthesis" else "crop:4+flip"
    return "rrc:0.75+flip" if phase == "synthesis" else "rrc:0.08+flip"


class Augment:
    """A batched augmentation from its text form: `crop:P` (random crop, zero padding of P px at the
    dataset's input size, scaled with the image's size), `rrc:S` (RandomResizedCrop, scale S-1, at the
    image's size), `none`, each optionally `+flip`. Flips only happen where the dataset allows them."""

    def __init__(self, text: str, input_size: int, hflip: bool) -> None:
        head, plus, tail = text.strip().lower().partition("+")
        kind, _, amount = head.partition(":")
        try:
            value = float(amount) if kind != "none" else 0.0
        except ValueError:
            value = -1.0
        if kind not in ("crop", "rrc", "none") or value < 0 or (plus and tail != "flip") or \
                (kind == "none" and amount) or (kind == "rrc" and not 0 < value <= 1):
            raise UserError(f"augmentation {text!r}: expected crop:PAD, rrc:SCALE or none, optionally +flip "
                            f"(e.g. crop:4+flip, rrc:0.75+flip)")
        self.kind, self.amount, self.flip = kind, value, bool(plus) and hflip
        self.input_size = input_size

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        size = x.shape[-1]
        if self.kind == "crop":
            x = random_crop(x, max(1, round(self.amount * size / self.input_size)), generator)
        elif self.kind == "rrc":
            x = random_resized_crop(x, size, scale=(self.amount, 1.0), generator=generator)
        return random_flip(x, generator) if self.flip else x


def roll_by(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """torch.roll of (N, C, H, W) images by shifts given as device tensors: the same pixels as
    `torch.roll(x, (rows, cols), (2, 3))`, gathered by index so the shift is never read on the host."""
    h, w = x.shape[-2:]
    row_index = (torch.arange(h, device=x.device) - rows) % h
    col_index = (torch.arange(w, device=x.device) - cols) % w
    return x.index_select(2, row_index).index_select(3, col_index)
