"""CMI: synthesis shapes, a falling generator loss, resume, the contrastive term, the feature bank,
the per-sample BN statistics and the per-round generator re-initialisation."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dfkd_bench import MethodContext, UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.methods.cmi import (Cmi, FeatureBank, contrastive_loss, feature_modules, instance_features,
                                   instance_statistics, local_crop)
from dfkd_bench.models import create_model
from method_helpers import TINY, make_ctx

CMI_TINY = {k: v for k, v in TINY.items() if k != "noise_dim"}  # noise_dim is NAYER's


def make_method(ctx: MethodContext, **overrides: object) -> Cmi:
    """CMI with the digits preset, the tiny budget and `overrides`."""
    return Cmi(ctx, resolve_hparams(Cmi.Hparams, "digits", {**CMI_TINY, **{k: str(v) for k, v in overrides.items()}}, "cmi"))


def test_synthesize_shapes_range_and_labels() -> None:
    method = make_method(make_ctx())
    for n in (10, 3):
        batch = method.synthesize(n)
        assert batch.images.shape == (n, 3, 32, 32) and not batch.images.requires_grad
        assert batch.images.min() >= 0 and batch.images.max() <= 1
        assert batch.labels.shape == (n,) and batch.labels.dtype == torch.long
        assert batch.labels.min() >= 0 and batch.labels.max() < 10
        assert batch.loss is not None and torch.isfinite(torch.tensor(batch.loss))
    assert len(method.bank) == 13  # each round banks its kept features
    assert "synth/cr" in method.loss_terms


def test_generator_loss_falls_within_a_round() -> None:
    method = make_method(make_ctx(), g_steps=12, synth_augment=False, adv=0.0, lr_g=0.01, lr_z=0.01)
    losses: list[float] = []
    loss_fn = method.generator_loss

    def recorded(step):  # type: ignore[no-untyped-def]
        loss = loss_fn(step)
        losses.append(float(loss.detach()))
        return loss

    method.generator_loss = recorded  # type: ignore[method-assign]
    batch = method.synthesize(16)
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.95 * losses[0], losses
    assert batch.loss == pytest.approx(min(losses))


def test_state_dict_round_trip_gives_the_same_next_batch() -> None:
    method = make_method(make_ctx())
    head_before = [p.detach().clone() for p in method.head.parameters()]
    method.synthesize(8)
    method.synthesize(8)
    assert any(not torch.equal(a, b) for a, b in zip(head_before, method.head.parameters()))  # the head trains

    other = make_method(make_ctx())
    assert len(other.bank) == 0
    other.load_state_dict(method.state_dict())
    assert torch.equal(other.bank.data, method.bank.data) and len(other.bank) == 16
    method.ctx.generator.manual_seed(11)
    other.ctx.generator.manual_seed(11)
    a, b = method.synthesize(6), other.synthesize(6)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert torch.equal(method.bank.data, other.bank.data)


def test_contrastive_loss_prefers_positive_pairs_and_splits_bank_rows() -> None:
    torch.manual_seed(0)
    views = nn.functional.normalize(torch.randn(12, 8), dim=1)
    aligned = contrastive_loss(views, views, 12, 0.1)
    shuffled = contrastive_loss(views, views.roll(1, dims=0), 12, 0.1)
    assert aligned < shuffled
    ce = nn.functional.cross_entropy(views @ views.T / 0.1, torch.arange(12), reduction="none")
    torch.testing.assert_close(contrastive_loss(views, views, 5, 0.1), ce[:5].mean() + ce[5:].mean())
    local = views.clone().requires_grad_(True)
    global_ = views.clone().requires_grad_(True)
    contrastive_loss(local, global_, 12, 0.1).backward()
    assert local.grad is not None and global_.grad is None  # the global side is a fixed target


def test_instance_statistics_are_per_sample_bn_input_moments() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 5, 3), nn.BatchNorm2d(5)).eval()
    x = torch.randn(3, 3, 8, 8)
    a, b = model[0](x), model[3](model[2](model[1](model[0](x))))
    means = instance_statistics(model, feature_modules(model, "auto"))
    with means.capture():
        model(x)
    torch.testing.assert_close(instance_features(means), torch.cat([a.mean((2, 3)), b.mean((2, 3))], dim=1))
    both = instance_statistics(model, ["1", "4"], with_var=True)
    with both.capture():
        model(x)
    expected = torch.cat([a.mean((2, 3)), a.var((2, 3), unbiased=False), b.mean((2, 3)), b.var((2, 3), unbiased=False)], 1)
    torch.testing.assert_close(instance_features(both), expected)
    model(x)  # outside capture(): nothing recorded
    with both.capture(), pytest.raises(RuntimeError):
        instance_features(both)
    means.close(), both.close()


def test_feature_modules_follow_the_reference_per_teacher() -> None:
    resnet = create_model("resnet34", 10)
    assert feature_modules(resnet, "auto") == ["layer1", "layer2", "layer3", "layer4"]
    assert all(isinstance(resnet.get_submodule(name), nn.BatchNorm2d) for name in feature_modules(resnet, "bn"))
    digits = create_model("digits_resnet8_slim", 10)
    assert feature_modules(digits, "auto") == feature_modules(digits, "bn")
    with pytest.raises(UserError, match="no layer1-4"):
        feature_modules(digits, "stages")
    method = make_method(make_ctx())  # the probe forward sizes the head: one mean per BN channel
    teacher = method.ctx.teacher
    assert method.head[0].in_features == sum(teacher.get_submodule(name).num_features
                                             for name in feature_modules(teacher, "bn"))


def test_feature_bank_is_bounded_and_sampled_without_replacement() -> None:
    bank = FeatureBank(size=5, dim=2, device=torch.device("cpu"))
    bank.add(torch.arange(8.0).view(4, 2))
    bank.add(torch.arange(8.0, 12.0).view(2, 2))
    assert len(bank) == 5 and torch.equal(bank.data[:, 0], torch.tensor([2.0, 4.0, 6.0, 8.0, 10.0]))  # oldest dropped
    rows = bank.sample(3, torch.Generator().manual_seed(0))
    assert rows.shape == (3, 2) and len({float(r) for r in rows[:, 0]}) == 3
    assert bank.sample(9, torch.Generator()).shape == (5, 2)


def test_every_round_starts_from_a_freshly_drawn_generator() -> None:
    trained, fresh = make_method(make_ctx()), make_method(make_ctx())
    trained.synthesize(8)
    trained.ctx.generator.manual_seed(5)
    fresh.ctx.generator.manual_seed(5)
    trained.reinitialise_generator()
    fresh.reinitialise_generator()
    for a, b in zip(trained.generator.state_dict().values(), fresh.generator.state_dict().values()):
        assert torch.equal(a, b)
    weight = trained.generator.project.weight
    assert abs(float(weight.detach().std()) - 0.02) < 0.002


def test_local_crop_keeps_shape_and_constant_images() -> None:
    x = torch.full((4, 3, 16, 16), 0.3)
    out = local_crop(x, 0.25, True, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    torch.testing.assert_close(out, x)
    ramp = torch.linspace(0, 1, 16).expand(2, 3, 16, 16)
    crop = local_crop(ramp, 0.25, False, torch.Generator().manual_seed(1))
    assert crop.min() >= 0 and crop.max() <= 1 and not torch.equal(crop, ramp)


@pytest.mark.parametrize("setting", [dict(cr_T=0.0), dict(cr_feature="max"), dict(local_scale=1.5), dict(n_neg=-1)])
def test_bad_settings_are_refused(setting: dict) -> None:
    with pytest.raises(UserError):
        make_method(make_ctx(), **setting)
