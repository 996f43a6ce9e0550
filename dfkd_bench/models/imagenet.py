"""torchvision ImageNet models (224 px) with the zoo attributes as read-only properties, so their
state_dict keys stay exactly torchvision's and published torchvision weights load with strict=True."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models import MobileNetV2, ResNet
from torchvision.models.resnet import BasicBlock, Bottleneck

from .zoo import ModelFactory, register_model


def _with_in_chans(conv: nn.Conv2d, in_chans: int) -> nn.Conv2d:
    """`conv` itself when the channels match, else a fresh conv of the same shape reading `in_chans` channels."""
    if in_chans == conv.in_channels:
        return conv
    fresh = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      bias=conv.bias is not None)
    nn.init.kaiming_normal_(fresh.weight, mode="fan_out", nonlinearity="relu")
    return fresh


class TVResNet(ResNet):
    """torchvision ResNet; `classifier` is `fc` and `feature_layer` is `layer4`."""

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (`fc`)."""
        return self.fc

    @property
    def feature_layer(self) -> nn.Module:
        """The last stage, whose output is the last conv map."""
        return self.layer4


class TVMobileNetV2(MobileNetV2):
    """torchvision MobileNetV2; `classifier` is the Linear inside torchvision's `classifier`
    Sequential (dropout, Linear), which stays reachable as `head`; `feature_layer` is `features`."""

    @property
    def head(self) -> nn.Sequential:
        """torchvision's `classifier` Sequential (dropout then Linear)."""
        return self._modules["classifier"]

    @property
    def classifier(self) -> nn.Linear:
        """The final Linear (`classifier[1]` in torchvision's keys)."""
        return self.head[1]

    @property
    def feature_layer(self) -> nn.Module:
        """The conv trunk, ending with the 1280-wide 1x1 conv."""
        return self.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def _register(tv_name: str, label: str) -> Callable[[ModelFactory], ModelFactory]:
    """Register a factory as `tv_<tv_name>`: a 224 px ImageNet model built like torchvision's `tv_name`."""
    return register_model(f"tv_{tv_name}", f"torchvision {label} for 224 px ImageNet inputs", input_size=224,
                          family="imagenet", torchvision_name=tv_name)


def _resnet(block: type[BasicBlock | Bottleneck], depths: Sequence[int], num_classes: int, in_chans: int) -> nn.Module:
    model = TVResNet(block, list(depths), num_classes=num_classes)
    model.conv1 = _with_in_chans(model.conv1, in_chans)
    return model


@_register("resnet18", "ResNet-18")
def tv_resnet18(num_classes: int, in_chans: int = 3) -> nn.Module:
    return _resnet(BasicBlock, (2, 2, 2, 2), num_classes, in_chans)


@_register("resnet34", "ResNet-34")
def tv_resnet34(num_classes: int, in_chans: int = 3) -> nn.Module:
    return _resnet(BasicBlock, (3, 4, 6, 3), num_classes, in_chans)


@_register("resnet50", "ResNet-50")
def tv_resnet50(num_classes: int, in_chans: int = 3) -> nn.Module:
    return _resnet(Bottleneck, (3, 4, 6, 3), num_classes, in_chans)


@_register("mobilenet_v2", "MobileNetV2 (width 1.0)")
def tv_mobilenet_v2(num_classes: int, in_chans: int = 3) -> nn.Module:
    model = TVMobileNetV2(num_classes=num_classes)
    model.features[0][0] = _with_in_chans(model.features[0][0], in_chans)
    return model
