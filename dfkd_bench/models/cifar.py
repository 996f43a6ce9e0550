"""CIFAR-style models (32 px inputs) used as teachers and students in the DFKD literature:
ResNet-18/34, Wide ResNets, VGG-8/11 with BatchNorm and MobileNetV2.

Every model is a conv trunk (`features`, whose output is the last conv map), global average
pooling and one Linear (`classifier`), so any input resolution works and the hooks find what
they need without a special forward.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, Sequence

import torch
import torch.nn as nn

from .resnet_small import BasicBlock
from .zoo import register_model

BlockFactory = Callable[[int, int, int], nn.Module]


def conv_bn(
    in_ch: int,
    out_ch: int,
    kernel: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: Callable[..., nn.Module] | None = nn.ReLU,
    bias: bool = False,
) -> nn.Sequential:
    """Conv ('same' padding), BatchNorm and an optional activation: the unit the trunks stack."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=bias),
        nn.BatchNorm2d(out_ch),
    ]
    if act is not None:
        layers.append(act(inplace=True))
    return nn.Sequential(*layers)


def make_stage(block: BlockFactory, in_ch: int, out_ch: int, depth: int, stride: int) -> nn.Sequential:
    """`depth` blocks; the first changes width and stride, the rest keep them."""
    return nn.Sequential(*(block(in_ch if i == 0 else out_ch, out_ch, stride if i == 0 else 1) for i in range(depth)))


class ConvClassifier(nn.Module):
    """A conv trunk, global average pooling and a single Linear classifier."""

    def __init__(self, features: nn.Sequential, width: int, num_classes: int) -> None:
        super().__init__()
        self.features = features
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)
        for m in self.features.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def feature_layer(self) -> nn.Module:
        """The trunk, whose output is the last conv map (a property: no duplicate state_dict keys)."""
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


# --------------------------------------------------------------------------- ResNet


def cifar_resnet(num_classes: int, in_chans: int, depths: Sequence[int]) -> ConvClassifier:
    """ResNet with BasicBlocks, a 3x3 stride-1 stem and no max-pool, stages 64-128-256-512."""
    stages, in_ch = [conv_bn(in_chans, 64)], 64
    for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
        stages.append(make_stage(BasicBlock, in_ch, width, depth, 1 if i == 0 else 2))
        in_ch = width
    return ConvClassifier(nn.Sequential(*stages), in_ch, num_classes)


@register_model("resnet18", "CIFAR ResNet-18 (BasicBlock 2-2-2-2, 3x3 stride-1 stem)")
def resnet18(num_classes: int, in_chans: int = 3) -> nn.Module:
    return cifar_resnet(num_classes, in_chans, (2, 2, 2, 2))


@register_model("resnet34", "CIFAR ResNet-34 (BasicBlock 3-4-6-3, 3x3 stride-1 stem)")
def resnet34(num_classes: int, in_chans: int = 3) -> nn.Module:
    return cifar_resnet(num_classes, in_chans, (3, 4, 6, 3))


# --------------------------------------------------------------------------- Wide ResNet


class PreActBlock(nn.Module):
    """Wide-ResNet block: (BN-ReLU-conv) twice; a 1x1 projection of the activated input when the
    shape changes, the identity otherwise."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(act)
        return self.conv2(torch.relu(self.bn2(self.conv1(act)))) + residual


def wide_resnet(num_classes: int, in_chans: int, depth: int, widen: int) -> ConvClassifier:
    """WRN-depth-widen: 3x3 stem of 16, three stages of (depth-4)/6 blocks at 16k-32k-64k, final BN-ReLU."""
    if (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    layers: list[nn.Module] = [nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)]
    for i in range(3):
        layers.append(make_stage(PreActBlock, widths[i], widths[i + 1], (depth - 4) // 6, 1 if i == 0 else 2))
    layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True)]
    return ConvClassifier(nn.Sequential(*layers), widths[3], num_classes)


@register_model("wrn16_1", "Wide ResNet-16-1 (pre-activation, widths 16-16-32-64)")
def wrn16_1(num_classes: int, in_chans: int = 3) -> nn.Module:
    return wide_resnet(num_classes, in_chans, 16, 1)


@register_model("wrn16_2", "Wide ResNet-16-2 (pre-activation, widths 16-32-64-128)")
def wrn16_2(num_classes: int, in_chans: int = 3) -> nn.Module:
    return wide_resnet(num_classes, in_chans, 16, 2)


@register_model("wrn40_1", "Wide ResNet-40-1 (pre-activation, widths 16-16-32-64)")
def wrn40_1(num_classes: int, in_chans: int = 3) -> nn.Module:
    return wide_resnet(num_classes, in_chans, 40, 1)


@register_model("wrn40_2", "Wide ResNet-40-2 (pre-activation, widths 16-32-64-128)")
def wrn40_2(num_classes: int, in_chans: int = 3) -> nn.Module:
    return wide_resnet(num_classes, in_chans, 40, 2)


# --------------------------------------------------------------------------- VGG


def cifar_vgg(num_classes: int, in_chans: int, stages: Sequence[Sequence[int]]) -> ConvClassifier:
    """VGG-BN as in the CRD and DataFree code: five conv stacks, 2x2 max-pool after the first three
    (a 4x4 last map at 32 px), global pooling and one Linear(512, classes); convs keep their bias."""
    layers: list[nn.Module] = []
    in_ch = in_chans
    for i, widths in enumerate(stages):
        for width in widths:
            layers.append(conv_bn(in_ch, width, bias=True))
            in_ch = width
        if i < 3:
            layers.append(nn.MaxPool2d(2))
    return ConvClassifier(nn.Sequential(*layers), in_ch, num_classes)


@register_model("vgg8", "CIFAR VGG-8-BN (one conv per stage 64-128-256-512-512)")
def vgg8(num_classes: int, in_chans: int = 3) -> nn.Module:
    return cifar_vgg(num_classes, in_chans, ((64,), (128,), (256,), (512,), (512,)))


@register_model("vgg11", "CIFAR VGG-11-BN (stages 64 / 128 / 256x2 / 512x2 / 512x2)")
def vgg11(num_classes: int, in_chans: int = 3) -> nn.Module:
    return cifar_vgg(num_classes, in_chans, ((64,), (128,), (256, 256), (512, 512), (512, 512)))


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [conv_bn(in_ch, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   conv_bn(hidden, out_ch, 1, act=None)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


# (expansion t, channels c, blocks n, stride s) per stage; the second stage's stride is 1 here, 2 on ImageNet.
MOBILENETV2_CIFAR = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                     (6, 320, 1, 1))


@register_model("mobilenetv2", "CIFAR MobileNetV2 (width 1.0, total stride 8)")
def mobilenetv2(num_classes: int, in_chans: int = 3) -> nn.Module:
    """MobileNetV2 at width 1.0 adapted to 32 px inputs: the stem conv and the second stage use stride 1
    instead of 2 (total stride 8, a 4x4 last map at 32 px, as in common CIFAR ports such as
    kuangliu/pytorch-cifar); otherwise the ImageNet layout (ReLU6, 1280-wide last 1x1 conv), no dropout."""
    layers: list[nn.Module] = [conv_bn(in_chans, 32, act=nn.ReLU6)]
    in_ch = 32
    for expand, width, depth, stride in MOBILENETV2_CIFAR:
        layers.append(make_stage(partial(InvertedResidual, expand=expand), in_ch, width, depth, stride))
        in_ch = width
    layers.append(conv_bn(in_ch, 1280, 1, act=nn.ReLU6))
    return ConvClassifier(nn.Sequential(*layers), 1280, num_classes)
