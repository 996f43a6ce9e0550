"""Image generators shared by the generator-based methods (Fast, NAYER, MUSE)."""

from __future__ import annotations

import torch
import torch.nn as nn


class ConvStack(nn.Module):
    """Fast's decoder: a (2*ngf, s, s) map -> BN, x2, conv, BN, LReLU, x2, conv, BN, LReLU, conv, Sigmoid.

    Output is 4s x 4s in [0,1].
    """

    def __init__(self, ngf: int, out_chans: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * ngf),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, out_chans, 3, 1, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LatentGenerator(nn.Module):
    """Fast's CIFAR generator: z (nz) -> Linear -> (2*ngf, r/4, r/4) -> ConvStack -> r x r image."""

    def __init__(self, nz: int, ngf: int, resolution: int, out_chans: int = 3) -> None:
        super().__init__()
        if resolution % 4:
            raise ValueError(f"generator resolution must be a multiple of 4, got {resolution}")
        self.init_size = resolution // 4
        self.ngf = ngf
        self.project = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.decode = ConvStack(ngf, out_chans)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], 2 * self.ngf, self.init_size, self.init_size)
        return self.decode(x)
