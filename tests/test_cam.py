"""MUSE's CAM: no mask for an image without positive class evidence, the blend toward the dataset mean
(or black), the CAM loss on the teacher's masked input, and one BN-momentum buffer per resolution
under feed=native (one in all under feed=upsample)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from dfkd_bench.engine import GeneratorStep, MethodContext, RoundInfo
from dfkd_bench.errors import UserError
from dfkd_bench.methods.muse import Muse, cam_masked, class_activation_map
from method_helpers import make_ctx, make_method

def make_muse(ctx: MethodContext, **overrides: Any) -> Muse:
    return make_method(Muse, ctx, **overrides)


# --- the CAM and its fallback ----------------------------------------------------------------------------------


def test_zero_cam_gives_the_unmasked_image() -> None:
    torch.manual_seed(0)
    images = torch.rand(3, 3, 8, 8)
    labels = torch.tensor([0, 1, 2])
    cam = class_activation_map(torch.zeros(3, 5, 4, 4), torch.randn(4, 5), labels, 8)
    assert torch.equal(cam, torch.ones(3, 1, 8, 8))
    mean = torch.tensor([0.2, 0.4, 0.6])
    assert torch.equal(cam_masked(images, cam, mean), images)
    assert torch.equal(cam_masked(images, cam, None), images)
    # A zero classifier row (no evidence for that label at all) does the same.
    torch.manual_seed(0)
    weight = torch.ones(4, 5)
    weight[1] = 0
    cam = class_activation_map(torch.rand(3, 5, 4, 4), weight, labels, 8)
    assert torch.equal(cam[1], torch.ones(1, 8, 8)) and cam[0].min() < 1


def test_near_zero_evidence_is_not_stretched() -> None:
    """Positive evidence below min_peak x max|raw CAM| falls back to no mask, per image; above it the
    CAM is divided by its peak as before."""
    weight = torch.eye(2)  # label y reads channel y
    conv = torch.full((3, 2, 4, 4), -1.0)
    conv[0, 0, 0, 0] = 1e-3   # image 0: strongest positive 0.1% of the strongest negative -> no mask
    conv[1, 0, 0, 0] = 0.5    # image 1: 50% -> a real CAM
    conv[2, 0] = 0.0          # image 2: zero map for its label -> no mask
    labels = torch.tensor([0, 0, 0])
    cam = class_activation_map(conv, weight, labels, 4)
    assert torch.equal(cam[0], torch.ones(1, 4, 4))
    assert torch.equal(cam[2], torch.ones(1, 4, 4))
    expected = torch.zeros(1, 4, 4)
    expected[0, 0, 0] = 1.0
    torch.testing.assert_close(cam[1], expected)
    # The threshold is the knob: at min_peak 0 only an all-zero map falls back.
    cam = class_activation_map(conv, weight, labels, 4, min_peak=0.0)
    torch.testing.assert_close(cam[0], expected)
    assert torch.equal(cam[2], torch.ones(1, 4, 4))
    # Relative, not absolute: scaling the features changes nothing.
    torch.testing.assert_close(class_activation_map(conv * 1e-4, weight, labels, 4),
                               class_activation_map(conv, weight, labels, 4))


def test_cam_in_unit_range_and_constant() -> None:
    torch.manual_seed(0)
    conv = torch.randn(6, 8, 4, 4, requires_grad=True)
    cam = class_activation_map(conv, torch.randn(10, 8, requires_grad=True), torch.arange(6), 16)
    assert cam.shape == (6, 1, 16, 16) and not cam.requires_grad
    assert cam.min() >= 0 and cam.max() <= 1 + 1e-6


def test_blend_toward_the_mean_or_black() -> None:
    torch.manual_seed(1)
    images = torch.rand(2, 3, 4, 4)
    mean = torch.tensor([0.1, 0.5, 0.9])
    m = mean.view(1, 3, 1, 1)
    cam = torch.rand(2, 1, 4, 4)
    torch.testing.assert_close(cam_masked(images, cam, mean), m + cam * (images - m))
    torch.testing.assert_close(cam_masked(images, torch.zeros_like(cam), mean), m.expand_as(images))
    torch.testing.assert_close(cam_masked(images, torch.full_like(cam, 0.5), mean), (images + m) / 2)
    torch.testing.assert_close(cam_masked(images, cam, None), images * cam)
    out = cam_masked(images, cam, mean)
    assert out.min() >= 0 and out.max() <= 1  # a convex blend of two [0,1] images stays in [0,1]


# --- the CAM loss inside MUSE --------------------------------------------------------------------------------


def _teacher_inputs(method: Muse, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, list[torch.Tensor]]:
    seen: list[torch.Tensor] = []
    hook = method.ctx.teacher.register_forward_pre_hook(lambda m, inp: seen.append(inp[0].detach().clone()))
    try:
        terms = method.generator_terms(GeneratorStep(images, labels))
    finally:
        hook.remove()
    return terms, seen


@pytest.mark.parametrize("fill", ["mean", "zero"])
def test_cam_loss_sees_the_blended_image(fill: str) -> None:
    method = make_muse(make_ctx((16,)), cam=0.5, synth_augment=False, cam_fill=fill)
    torch.manual_seed(2)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8)
    _, seen = _teacher_inputs(method, images, labels)
    assert len(seen) == 2  # the BN/CE forward, then the CAM forward
    with torch.no_grad():
        conv = method.ctx.teacher.feature_layer  # recompute the CAM from a tapped forward
        maps: list[torch.Tensor] = []
        h = conv.register_forward_hook(lambda m, i, o: maps.append(o))
        method.ctx.teacher(method.model_input(images))
        h.remove()
    cam = class_activation_map(maps[0], method.ctx.teacher.classifier.weight, labels, 16)
    mean = torch.tensor(method.ctx.spec.mean) if fill == "mean" else None
    torch.testing.assert_close(seen[1], method.model_input(cam_masked(images, cam, mean)))


def test_cam_loss_without_evidence_is_the_plain_ce() -> None:
    """A teacher whose classifier weights are zero has a zero CAM for every label: no mask, so the CAM
    forward sees exactly the unmasked input and L_cam equals the CE of the first forward."""
    ctx = make_ctx((16,))
    ctx.teacher.classifier.weight.zero_()
    method = make_muse(ctx, cam=0.5, oh=0.5, synth_augment=False)
    torch.manual_seed(3)
    images, labels = torch.rand(8, 3, 16, 16), torch.arange(8)
    terms, seen = _teacher_inputs(method, images, labels)
    assert torch.equal(seen[0], seen[1])
    torch.testing.assert_close(terms["cam"], terms["oh"])


def test_cam_switch_values() -> None:
    with pytest.raises(UserError, match="mean, zero"):
        make_muse(make_ctx((16,)), cam_fill="grey")
    with pytest.raises(UserError, match="cam_min_peak"):
        make_muse(make_ctx((16,)), cam_min_peak=1.5)
    assert Muse.Hparams().cam_fill == "mean"


# --- BN-momentum buffers per resolution ------------------------------------------------------------------------


def _rounds(method: Muse, first: int, n: int) -> list[int]:
    """Run n synthesis rounds, of indices first, first + 1, ...; return the resolution of each."""
    return [method.synthesize(8, RoundInfo.standalone(index=r)).images.shape[-1] for r in range(first, first + n)]


def test_native_feed_keeps_one_buffer_per_resolution() -> None:
    method = make_muse(make_ctx((16, 32)), feed="native", schedule="cycle", g_steps=1, aed=0, adv=0)
    assert _rounds(method, 0, 1) == [16]
    b16 = method.bn_losses[16]
    first = [t.clone() for t in b16.ema_mean]
    assert _rounds(method, 1, 1) == [32]
    b32 = method.bn_losses[32]
    assert b32 is not b16 and set(method.bn_losses) == {16, 32}
    assert all(torch.equal(a, b) for a, b in zip(b16.ema_mean, first))  # the 32 px round left it alone
    # The 32 px buffer started from 32 px statistics alone: after its first round (one step) it holds
    # that step's plain batch statistics, not a blend with the 16 px buffer.
    plain = b32.records()
    assert b32.ema_mean is not None and len(b32.ema_mean) == len(plain) == len(b16.ema_mean)
    assert all(torch.equal(e, r[3]) for e, r in zip(b32.ema_mean, plain))
    assert all(torch.equal(e, r[4]) for e, r in zip(b32.ema_var, plain))
    assert _rounds(method, 2, 1) == [16]
    assert not all(torch.equal(a, b) for a, b in zip(b16.ema_mean, first))  # the 16 px round folded in

    # Resume: the buffers travel through state_dict, each to its resolution.
    other = make_muse(make_ctx((16, 32)), feed="native", schedule="cycle", g_steps=1, aed=0, adv=0)
    other.load_state_dict(method.state_dict())
    for r in (16, 32):
        assert all(torch.equal(a, b) for a, b in zip(other.bn_losses[r].ema_mean, method.bn_losses[r].ema_mean))
        assert all(torch.equal(a, b) for a, b in zip(other.bn_losses[r].ema_var, method.bn_losses[r].ema_var))


def test_upsample_feed_shares_one_buffer() -> None:
    method = make_muse(make_ctx((16, 32)), feed="upsample", schedule="cycle", g_steps=1, aed=0, adv=0)
    bn = method.bn_loss
    assert _rounds(method, 0, 1) == [16]
    first = [t.clone() for t in bn.ema_mean]
    assert _rounds(method, 1, 1) == [32]
    assert method.bn_loss is bn and list(method.bn_losses.values()) == [bn]
    plain = bn.records()  # the 32 px round blended its statistics into the 16 px round's buffer
    assert not torch.equal(bn.ema_mean[0], plain[0][3])
    torch.testing.assert_close(bn.ema_mean[0], 0.1 * plain[0][3] + 0.9 * first[0])
    assert not all(torch.equal(a, b) for a, b in zip(bn.ema_mean, first))  # the 32 px round updated it
