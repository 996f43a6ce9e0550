"""The model zoo: every model forwards at the resolutions it supports, exposes what the hooks read,
has the published parameter count, the torchvision models keep torchvision's state_dict keys, and the
CIFAR models keep the keys and shapes of the DFKD reference code (zju-vipa's DataFree, CMI, Fast-Datafree,
NAYER), so its published teachers load strictly."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from dfkd_bench.engine import CONV_MAP, PENULTIMATE, BNStatisticsLoss
from dfkd_bench.errors import UserError
from dfkd_bench.models import (
    MODELS,
    ForwardRecorder,
    count_parameters,
    create_model,
    model_info,
    parameter_count,
    replace_classifier,
)

NUM_CLASSES = 7

# Parameter counts at 10 classes as quoted in the DFKD papers (CIFAR-10 teachers and students).
PAPER_PARAMS = {
    "resnet34": 21.28e6,
    "resnet18": 11.17e6,
    "vgg11": 9.23e6,
    "wrn40_2": 2.24e6,
    "wrn16_2": 0.69e6,
    "wrn40_1": 0.56e6,
    "wrn16_1": 0.175e6,
}

TORCHVISION = ["tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2"]


def sizes(name: str) -> list[int]:
    """The resolutions a model is checked at: its own, and 64 px (CIFAR-style models also run larger)."""
    return [64, 224] if model_info(name).input_size == 224 else [32, 64]


CASES = [(name, size) for name in MODELS.names() for size in sizes(name)]


@pytest.mark.parametrize("name,size", CASES, ids=[f"{n}-{s}px" for n, s in CASES])
def test_forward_and_hooks(name: str, size: int) -> None:
    model = create_model(name, NUM_CLASSES).eval()
    stats = BNStatisticsLoss(model)
    tap = ForwardRecorder(model, {"conv_map": CONV_MAP, "penultimate": PENULTIMATE})
    with torch.no_grad(), stats.collect(), tap.capture():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, NUM_CLASSES)
    bn_layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bn_layers and list(stats.stats.modules.values()) == bn_layers  # every BN layer, by its name
    assert [layer for _, _, layer, *_ in stats.records()] == bn_layers  # each called once
    penultimate, conv_map = tap.latest("penultimate"), tap.latest("conv_map")
    assert penultimate is not None and penultimate.shape == (2, model.classifier.in_features)
    assert conv_map is not None and conv_map.dim() == 4 and conv_map.shape[0] == 2


@pytest.mark.parametrize("name", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_papers(name: str) -> None:
    count = count_parameters(create_model(name, 10))
    assert abs(count - PAPER_PARAMS[name]) <= 0.01 * PAPER_PARAMS[name], f"{name}: {count:,}"
    assert parameter_count(name, 10) == count  # the meta-device count the listing prints


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_models_keep_torchvision_keys(name: str) -> None:
    info = model_info(name)
    assert info.family == "imagenet" and info.input_size == 224 and info.torchvision_name
    ours = create_model(name, 1000).state_dict()
    theirs = torchvision.models.get_model(info.torchvision_name, weights=None).state_dict()
    assert list(ours) == list(theirs)
    assert all(ours[k].shape == theirs[k].shape for k in theirs)
    torchvision.models.get_model_weights(info.torchvision_name)  # the builder name the weights API needs


@pytest.mark.parametrize("name,size", [("resnet18", 32), ("tv_mobilenet_v2", 64)])
def test_replace_classifier_restricts_the_head(name: str, size: int) -> None:
    model = create_model(name, 1000).eval()
    keep = torch.arange(0, 1000, 100)
    old = model.classifier
    head = nn.Linear(old.in_features, len(keep))
    with torch.no_grad():
        head.weight.copy_(old.weight[keep])
        head.bias.copy_(old.bias[keep])
        x = torch.rand(2, 3, size, size)
        full = model(x)
        replace_classifier(model, head)
        restricted = model(x)
    assert model.classifier is head and restricted.shape == (2, 10)
    assert torch.allclose(restricted, full[:, keep], atol=1e-5)
    assert all(m is not old for m in model.modules())


def test_metadata_and_channels() -> None:
    assert model_info("digits_resnet8").family == "digits" and model_info("wrn40_2").family == "cifar"
    assert model_info("resnet34").torchvision_name is None
    with pytest.raises(UserError, match="unknown model"):
        model_info("resnet1000")
    for name, size in [("wrn16_1", 32), ("tv_resnet18", 64)]:
        with torch.no_grad():
            assert create_model(name, 3, in_chans=1).eval()(torch.rand(2, 1, size, size)).shape == (2, 3)


# --------------------------------------------------------------------------- reference state_dict layouts
# The expected keys and shapes are written from the reference definitions in DataFree-style repositories
# (datafree/models/classifiers/{resnet,wresnet,vgg,mobilenetv2}.py), in their registration order.

Shapes = dict[str, tuple[int, ...]]


def conv_keys(name: str, out_ch: int, in_ch: int, kernel: int, bias: bool = False) -> Shapes:
    """An nn.Conv2d's entries (`in_ch` is the per-group input width)."""
    return {f"{name}.weight": (out_ch, in_ch, kernel, kernel), **({f"{name}.bias": (out_ch,)} if bias else {})}


def bn_keys(name: str, ch: int) -> Shapes:
    """An nn.BatchNorm2d's entries."""
    return {f"{name}.{k}": (ch,) for k in ("weight", "bias", "running_mean", "running_var")} | {
        f"{name}.num_batches_tracked": ()}


def linear_keys(name: str, out_features: int, in_features: int) -> Shapes:
    """An nn.Linear's entries."""
    return {f"{name}.weight": (out_features, in_features), f"{name}.bias": (out_features,)}


def state_shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """The state_dict as (key, shape) pairs, in order."""
    return [(key, tuple(value.shape)) for key, value in model.state_dict().items()]


def reference_resnet(depths: tuple[int, ...], classes: int) -> Shapes:
    """resnet.py (DAFL's, in DataFree/CMI): conv1, bn1, layer1-4 of BasicBlock(conv1, bn1, conv2, bn2,
    shortcut = 1x1 conv + BN where the stride or width changes), linear."""
    keys = conv_keys("conv1", 64, 3, 3) | bn_keys("bn1", 64)
    in_ch = 64
    for stage, (width, depth) in enumerate(zip((64, 128, 256, 512), depths), start=1):
        for j in range(depth):
            block, cin = f"layer{stage}.{j}", in_ch if j == 0 else width
            keys |= conv_keys(f"{block}.conv1", width, cin, 3) | bn_keys(f"{block}.bn1", width)
            keys |= conv_keys(f"{block}.conv2", width, width, 3) | bn_keys(f"{block}.bn2", width)
            if j == 0 and (stage > 1 or cin != width):
                keys |= conv_keys(f"{block}.shortcut.0", width, cin, 1) | bn_keys(f"{block}.shortcut.1", width)
        in_ch = width
    return keys | linear_keys("linear", classes, 512)


def reference_wrn(depth: int, widen: int, classes: int) -> Shapes:
    """wresnet.py: conv1, block1-3 (NetworkBlock.layer of BasicBlock(bn1, conv1, bn2, conv2, convShortcut
    where the width changes)), bn1, fc."""
    widths = (16, 16 * widen, 32 * widen, 64 * widen)
    keys = conv_keys("conv1", 16, 3, 3)
    for b in range(3):
        for j in range((depth - 4) // 6):
            block, cin, width = f"block{b + 1}.layer.{j}", widths[b] if j == 0 else widths[b + 1], widths[b + 1]
            keys |= bn_keys(f"{block}.bn1", cin) | conv_keys(f"{block}.conv1", width, cin, 3)
            keys |= bn_keys(f"{block}.bn2", width) | conv_keys(f"{block}.conv2", width, width, 3)
            if cin != width:
                keys |= conv_keys(f"{block}.convShortcut", width, cin, 1)
    return keys | bn_keys("bn1", widths[3]) | linear_keys("fc", classes, widths[3])


def reference_vgg(stages: tuple[tuple[int, ...], ...], classes: int) -> Shapes:
    """vgg.py (CRD's): block0-4, each (conv with bias, BN, ReLU) per width, the last ReLU dropped; classifier."""
    keys: Shapes = {}
    in_ch = 3
    for i, widths in enumerate(stages):
        for j, width in enumerate(widths):
            keys |= conv_keys(f"block{i}.{3 * j}", width, in_ch, 3, bias=True) | bn_keys(f"block{i}.{3 * j + 1}", width)
            in_ch = width
    return keys | linear_keys("classifier", classes, 512)


def reference_mobilenetv2(classes: int) -> Shapes:
    """mobilenetv2.py (torchvision's layout): features.0 = ConvBNReLU6(3, 32), features.1-17 =
    InvertedResidual(.conv = [pw ConvBNReLU6], dw ConvBNReLU6, 1x1 conv, BN), features.18 =
    ConvBNReLU6(320, 1280, 1x1); classifier = (Dropout, Linear)."""
    keys = conv_keys("features.0.0", 32, 3, 3) | bn_keys("features.0.1", 32)
    index, in_ch = 1, 32
    for expand, width, depth in ((1, 16, 1), (6, 24, 2), (6, 32, 3), (6, 64, 4), (6, 96, 3), (6, 160, 3), (6, 320, 1)):
        for _ in range(depth):
            block, hidden, k = f"features.{index}.conv", in_ch * expand, 0
            if expand != 1:
                keys |= conv_keys(f"{block}.0.0", hidden, in_ch, 1) | bn_keys(f"{block}.0.1", hidden)
                k = 1
            keys |= conv_keys(f"{block}.{k}.0", hidden, 1, 3) | bn_keys(f"{block}.{k}.1", hidden)
            keys |= conv_keys(f"{block}.{k + 1}", width, hidden, 1) | bn_keys(f"{block}.{k + 2}", width)
            index, in_ch = index + 1, width
    keys |= conv_keys(f"features.{index}.0", 1280, in_ch, 1) | bn_keys(f"features.{index}.1", 1280)
    return keys | linear_keys("classifier.1", classes, 1280)


@pytest.mark.parametrize("name,depths", [("resnet18", (2, 2, 2, 2)), ("resnet34", (3, 4, 6, 3))],
                         ids=["resnet18", "resnet34"])
def test_cifar_resnets_keep_the_reference_keys(name: str, depths: tuple[int, ...]) -> None:
    assert state_shapes(create_model(name, 10)) == list(reference_resnet(depths, 10).items())


@pytest.mark.parametrize("name,depth,widen", [("wrn16_1", 16, 1), ("wrn40_2", 40, 2)])
def test_wide_resnets_keep_the_reference_keys(name: str, depth: int, widen: int) -> None:
    assert state_shapes(create_model(name, 10)) == list(reference_wrn(depth, widen, 10).items())


@pytest.mark.parametrize("name,stages", [
    ("vgg8", ((64,), (128,), (256,), (512,), (512,))),
    ("vgg11", ((64,), (128,), (256, 256), (512, 512), (512, 512))),
], ids=["vgg8", "vgg11"])
def test_cifar_vggs_keep_the_reference_keys(name: str, stages: tuple[tuple[int, ...], ...]) -> None:
    assert state_shapes(create_model(name, 10)) == list(reference_vgg(stages, 10).items())


def test_cifar_mobilenetv2_keeps_the_reference_keys_and_forward() -> None:
    model = create_model("mobilenetv2", 10).eval()
    assert state_shapes(model) == list(reference_mobilenetv2(10).items())
    reference = torchvision.models.mobilenet_v2(num_classes=10).eval()  # the definition the reference file copies
    reference.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        x = torch.rand(2, 3, 32, 32)
        assert torch.equal(model(x), reference(x))


@pytest.mark.parametrize("name,at32,at64", [
    ("resnet18", 4, 8), ("wrn16_1", 8, 16), ("vgg11", 4, 4), ("mobilenetv2", 1, 2),
])
def test_last_conv_map_follows_the_reference_strides(name: str, at32: int, at64: int) -> None:
    """Total strides 8 (ResNet), 4 (WRN), 8 (VGG, plus its extra pool at exactly 64 px) and 32 (MobileNetV2)."""
    model = create_model(name, 10).eval()
    tap = ForwardRecorder(model, {"conv_map": CONV_MAP}, active=True)
    for size, side in ((32, at32), (64, at64)):
        with torch.no_grad():
            model(torch.rand(1, 3, size, size))
        conv_map = tap.latest("conv_map")
        assert conv_map is not None and conv_map.shape[2:] == (side, side)
