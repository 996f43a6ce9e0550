"""Small ResNets with BatchNorm for low-resolution inputs (the digits pair)."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .zoo import register_model


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """CIFAR-style ResNet (three stages) with a configurable stem stride and widths."""

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        blocks: Sequence[int] = (1, 1, 1),
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        stages, in_ch = [], widths[0]
        for i, (width, n) in enumerate(zip(widths, blocks)):
            layers = [BasicBlock(in_ch if j == 0 else width, width, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            stages.append(nn.Sequential(*layers))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.feature_layer = self.stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


@register_model("digits_resnet8", "ResNet-8 (widths 32-64-128, stride-2 stem) for 32x32 digits; the digits teacher",
                family="digits")
def digits_resnet8(num_classes: int, in_chans: int = 3) -> nn.Module:
    return SmallResNet(num_classes, in_chans, widths=(32, 64, 128), stem_stride=2)


@register_model("digits_resnet8_slim", "ResNet-8 at half width (16-32-64, stride-2 stem); the digits student",
                family="digits")
def digits_resnet8_slim(num_classes: int, in_chans: int = 3) -> nn.Module:
    return SmallResNet(num_classes, in_chans, widths=(16, 32, 64), stem_stride=2)


@register_model("resnet8", "CIFAR ResNet-8 (widths 16-32-64, stride-1 stem)")
def resnet8(num_classes: int, in_chans: int = 3) -> nn.Module:
    return SmallResNet(num_classes, in_chans, widths=(16, 32, 64))
