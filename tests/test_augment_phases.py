"""Augmentation per dataset and phase, as the references use it, and overridable per method."""

from __future__ import annotations

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine.augment import Augment, default_augment, student_augment
from dfkd_bench.errors import UserError
from dfkd_bench.plugins import METHODS

EXPECTED = {  # dataset: (synthesis, kd)
    "cifar10": ("crop:4+flip", "crop:4+flip"),
    "digits": ("crop:4+flip", "crop:4+flip"),  # flips are then off: digits has hflip=False
    "tiny-imagenet": ("crop:4", "crop:4+flip"),  # NAYER's Tiny-ImageNet: no flip while synthesising
    "imagenette": ("rrc:0.75+flip", "rrc:0.08+flip"),  # Fast's ImageNet synthesis; standard RRC for KD
}


@pytest.mark.parametrize("dataset", list(EXPECTED))
def test_defaults_follow_the_references(dataset: str) -> None:
    size = get_dataset(dataset).input_size
    assert (default_augment(size, "synthesis"), default_augment(size, "kd")) == EXPECTED[dataset]


def test_crop_pads_scale_with_the_image_and_match_the_old_path() -> None:
    """At 32 px (and MUSE's 16 px) `crop:4+flip` is exactly the former student augmentation."""
    for size in (16, 32):
        x = torch.rand(6, 3, size, size)
        a = Augment("crop:4+flip", 32, True)(x, torch.Generator().manual_seed(1))
        b = student_augment(x, True, torch.Generator().manual_seed(1))
        assert torch.equal(a, b)


def test_no_flip_where_the_dataset_forbids_it_or_the_phase_leaves_it_out() -> None:
    x = torch.zeros(64, 1, 4, 4)
    x[:, :, :, 0] = 1.0  # a bright left column: a flip moves it to the right
    for aug in (Augment("none+flip", 32, hflip=False), Augment("none", 32, hflip=True)):
        assert torch.equal(aug(x, torch.Generator().manual_seed(0)), x)
    flipped = Augment("none+flip", 32, hflip=True)(x, torch.Generator().manual_seed(0))
    assert 0 < int(flipped[:, 0, 0, 3].sum()) < 64


def test_rrc_scale_bounds_the_crop() -> None:
    """scale 1-1 with ratio 1 is the identity; 0.75 keeps most of a smooth gradient's range."""
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(16, 1, 64, 64).contiguous()
    out = Augment("rrc:0.75", 64, True)(ramp, torch.Generator().manual_seed(0))
    spans = out[:, 0, 32].amax(1) - out[:, 0, 32].amin(1)
    assert out.shape == ramp.shape and bool((spans > 0.6).all())


def test_methods_take_the_override_and_bad_text_is_refused() -> None:
    hp = resolve_hparams(METHODS.get("nayer").Hparams, ("cifar10",), {"synth_aug": "rrc:0.5+flip"})
    assert hp.synth_aug == "rrc:0.5+flip"
    with pytest.raises(UserError, match="expected crop:PAD, rrc:SCALE or none"):
        resolve_hparams(METHODS.get("fast").Hparams, ("cifar10",), {"kd_aug": "jitter:3"}, "fast")
