"""The model zoo: every model forwards at the resolutions it supports, exposes what the hooks read,
has the published parameter count, and the torchvision models keep torchvision's state_dict keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torchvision

from dfkd_bench.errors import UserError
from dfkd_bench.models import (
    MODELS,
    BNStatistics,
    FeatureTap,
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
    stats, tap = BNStatistics(model), FeatureTap(model)
    stats.enabled = tap.enabled = True
    with torch.no_grad():
        logits = model(torch.rand(2, 3, size, size))
    assert logits.shape == (2, NUM_CLASSES)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0 and len(stats.means) == len(stats.vars) == n_bn
    assert tap.penultimate is not None and tap.penultimate.shape == (2, model.classifier.in_features)
    assert tap.conv_map is not None and tap.conv_map.dim() == 4 and tap.conv_map.shape[0] == 2


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
