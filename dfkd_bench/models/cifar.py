"""CIFAR-style models (32 px inputs) used as teachers and students in the DFKD literature:
ResNet-18/34, Wide ResNets, VGG-8/11 with BatchNorm and MobileNetV2.

Submodules carry the names and shapes of the reference definitions in zju-vipa's DataFree code
(`datafree/models/classifiers/{resnet,wresnet,vgg,mobilenetv2}.py`, reused by CMI, Fast-Datafree
and NAYER), so their published teachers (e.g. `cifar10_resnet34.pth`) load with strict=True, and
each forward computes what the reference forward computes. Every model ends with global average
pooling (any input size) and one Linear; `classifier` and `feature_layer` are properties over the
reference names, so they add no state_dict keys.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import partial
from typing import Callable, ClassVar, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

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
    """Conv ('same' padding), BatchNorm and an optional activation; unpack it (`*conv_bn(...)`) to inline the layers."""
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


class CifarNet(nn.Module):
    """A conv trunk, global average pooling and a head, under the reference code's attribute names."""

    head_name: ClassVar[str]  # the submodule applied to the pooled features
    feature_name: ClassVar[str]  # the submodule whose output is the last conv map

    @property
    def head(self) -> nn.Module:
        """What the pooled features go through: the Linear, or MobileNetV2's (dropout, Linear)."""
        return self._modules[self.head_name]

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (a property: no duplicate state_dict keys)."""
        head = self.head
        return head[-1] if isinstance(head, nn.Sequential) else head

    @property
    def feature_layer(self) -> nn.Module:
        """The submodule whose output is the last conv map, the one that is pooled."""
        return self._modules[self.feature_name]

    def init_weights(self) -> None:
        """He initialisation (fan-out) of every conv, as the reference definitions do."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last conv map."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.forward_features(x), 1), 1))


# --------------------------------------------------------------------------- ResNet


class CifarResNet(CifarNet):
    """ResNet with BasicBlocks, a 3x3 stride-1 stem and no max-pool, stages 64-128-256-512; names as
    DAFL's resnet.py that DataFree reuses: conv1, bn1, layer1-4 (conv1/bn1/conv2/bn2/shortcut), linear."""

    head_name, feature_name = "linear", "layer4"

    def __init__(self, depths: Sequence[int], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        in_ch = 64
        for i, (width, depth) in enumerate(zip((64, 128, 256, 512), depths)):
            self.add_module(f"layer{i + 1}", make_stage(BasicBlock, in_ch, width, depth, 1 if i == 0 else 2))
            in_ch = width
        self.linear = nn.Linear(in_ch, num_classes)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


@register_model("resnet18", "CIFAR ResNet-18 (BasicBlock 2-2-2-2, 3x3 stride-1 stem)")
def resnet18(num_classes: int, in_chans: int = 3) -> nn.Module:
    return CifarResNet((2, 2, 2, 2), num_classes, in_chans)


@register_model("resnet34", "CIFAR ResNet-34 (BasicBlock 3-4-6-3, 3x3 stride-1 stem)")
def resnet34(num_classes: int, in_chans: int = 3) -> nn.Module:
    return CifarResNet((3, 4, 6, 3), num_classes, in_chans)


# --------------------------------------------------------------------------- Wide ResNet


class PreActBlock(nn.Module):
    """Wide-ResNet block: (BN-ReLU-conv) twice; when the width changes, the shortcut is a 1x1 conv of
    the activated input (`convShortcut`, the reference name), else the identity."""

    def __init__(self, in_ch: int, out_ch: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        # As in the reference, only a width change gets a projection (a stride always comes with one).
        self.convShortcut = nn.Conv2d(in_ch, out_ch, 1, stride, bias=False) if in_ch != out_ch else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = torch.relu(self.bn1(x))
        residual = x if self.convShortcut is None else self.convShortcut(act)
        return self.conv2(torch.relu(self.bn2(self.conv1(act)))) + residual


class WideResNet(CifarNet):
    """WRN-depth-widen: 3x3 stem conv of 16, three stages of (depth-4)/6 blocks at 16k-32k-64k, final
    BN-ReLU; names as DataFree's wresnet.py: conv1, block1-3 (each holding `.layer`), bn1, fc."""

    head_name, feature_name = "fc", "relu"

    def __init__(self, depth: int, widen: int, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"Wide ResNet depth must be 6n+4, got {depth}")
        widths = (16, 16 * widen, 32 * widen, 64 * widen)
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        for i in range(3):
            stage = make_stage(PreActBlock, widths[i], widths[i + 1], (depth - 4) // 6, 1 if i == 0 else 2)
            self.add_module(f"block{i + 1}", nn.Sequential(OrderedDict(layer=stage)))  # keys block<i>.layer.<j>
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(widths[3], num_classes)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))


@register_model("wrn16_1", "Wide ResNet-16-1 (pre-activation, widths 16-16-32-64)")
def wrn16_1(num_classes: int, in_chans: int = 3) -> nn.Module:
    return WideResNet(16, 1, num_classes, in_chans)


@register_model("wrn16_2", "Wide ResNet-16-2 (pre-activation, widths 16-32-64-128)")
def wrn16_2(num_classes: int, in_chans: int = 3) -> nn.Module:
    return WideResNet(16, 2, num_classes, in_chans)


@register_model("wrn40_1", "Wide ResNet-40-1 (pre-activation, widths 16-16-32-64)")
def wrn40_1(num_classes: int, in_chans: int = 3) -> nn.Module:
    return WideResNet(40, 1, num_classes, in_chans)


@register_model("wrn40_2", "Wide ResNet-40-2 (pre-activation, widths 16-32-64-128)")
def wrn40_2(num_classes: int, in_chans: int = 3) -> nn.Module:
    return WideResNet(40, 2, num_classes, in_chans)


# --------------------------------------------------------------------------- VGG


class CifarVGG(CifarNet):
    """VGG-BN as in the CRD code DataFree reuses: five conv stacks block0-4 (conv with bias, BN, ReLU
    each), 2x2 max-pool after the first three, global pooling, one Linear `classifier`."""

    head_name, feature_name = "classifier", "block4"

    def __init__(self, stages: Sequence[Sequence[int]], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        in_ch = in_chans
        for i, widths in enumerate(stages):
            layers: list[nn.Module] = []
            for width in widths:
                layers += conv_bn(in_ch, width, bias=True)  # flat: keys block<i>.<3j> (conv), .<3j+1> (BN)
                in_ch = width
            self.add_module(f"block{i}", nn.Sequential(*layers))
        self.pool = nn.MaxPool2d(2)
        self.classifier = nn.Linear(in_ch, num_classes)
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        # The reference also pools after block3 when the input is 64 px high (Tiny-ImageNet), and only then.
        pool_after = (0, 1, 2, 3) if x.shape[2] == 64 else (0, 1, 2)
        for i in range(5):
            x = self._modules[f"block{i}"](x)
            if i in pool_after:
                x = self.pool(x)
        return x


@register_model("vgg8", "CIFAR VGG-8-BN (one conv per stage 64-128-256-512-512)")
def vgg8(num_classes: int, in_chans: int = 3) -> nn.Module:
    return CifarVGG(((64,), (128,), (256,), (512,), (512,)), num_classes, in_chans)


@register_model("vgg11", "CIFAR VGG-11-BN (stages 64 / 128 / 256x2 / 512x2 / 512x2)")
def vgg11(num_classes: int, in_chans: int = 3) -> nn.Module:
    return CifarVGG(((64,), (128,), (256, 256), (512, 512), (512, 512)), num_classes, in_chans)


# --------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expansion, 3x3 depthwise, linear 1x1 projection; residual when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_ch * expand
        layers = [conv_bn(in_ch, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers.append(conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6))
        layers += conv_bn(hidden, out_ch, 1, act=None)  # flat: the projection conv and its BN
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(x)
        return x + out if self.residual else out


# (expansion t, channels c, blocks n, stride s) per stage: the ImageNet layout, which the reference keeps on CIFAR.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                      (6, 320, 1, 1))


class MobileNetV2(CifarNet):
    """MobileNetV2 at width 1.0 as DataFree's mobilenetv2.py (torchvision's layout and names): `features`
    (stride-2 stem, 17 blocks, 1280-wide 1x1 conv; total stride 32, a 1x1 last map at 32 px) and
    `classifier` = (Dropout(0.2), Linear)."""

    head_name, feature_name = "classifier", "features"

    def __init__(self, num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [conv_bn(in_chans, 32, stride=2, act=nn.ReLU6)]
        in_ch = 32
        for expand, width, depth, stride in MOBILENETV2_STAGES:
            layers.extend(make_stage(partial(InvertedResidual, expand=expand), in_ch, width, depth, stride))  # flat
            in_ch = width
        layers.append(conv_bn(in_ch, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))
        self.init_weights()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


@register_model("mobilenetv2", "CIFAR MobileNetV2 (width 1.0, DataFree's: ImageNet strides, total stride 32)")
def mobilenetv2(num_classes: int, in_chans: int = 3) -> nn.Module:
    return MobileNetV2(num_classes, in_chans)
