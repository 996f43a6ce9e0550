"""DeepInversion as NVlabs runs it at ImageNet scale (setting 0: 2k iterations on the 2x pooled image,
then 1k at full size, a new Adam and a new warm-up + cosine per stage, TV/L2/jitter on the pooled
image), the digits/CIFAR behaviour pinned by a fingerprint, and a synthesis loop free of host reads."""

from __future__ import annotations

import dataclasses
import math
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dfkd_bench import MethodContext, UserError
from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import Normalize
from dfkd_bench.engine.bank import to_uint8
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS
from dfkd_bench.schedule import RoundInfo

SPEC = get_dataset("digits")
FLIP_SPEC = dataclasses.replace(SPEC, hflip=True)  # the CIFAR path: jitter and flip


@pytest.fixture(scope="module")
def teacher() -> nn.Module:
    """digits_resnet8 with a fixed init (seed 0) whose BN running statistics were measured on the
    first 256 real training digits (no weight trained), frozen."""
    torch.manual_seed(0)
    model = create_model("digits_resnet8", SPEC.num_classes)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(Normalize(SPEC.mean, SPEC.std)(SPEC.open().in_memory_train()[0][:256]))
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def make(teacher: nn.Module, spec=SPEC, resolution: int = 32, preset: str = "digits", **overrides: object):
    torch.manual_seed(1)
    student = create_model("digits_resnet8", spec.num_classes)
    ctx = MethodContext.create(teacher, student, spec, 123, resolutions=(resolution,))
    cls = METHODS.get("deepinversion")
    return cls(ctx, resolve_hparams(cls.Hparams, preset, overrides, "deepinversion"))


# Recorded with the code before setting 0 was reworked (git HEAD of methods/deepinversion.py at the
# time): (sum of the kept images in float64, sum of their uint8 quantisation, label sum, kept loss,
# the generator's next uniform draw). The digits and CIFAR presets must keep producing these.
FINGERPRINTS = {
    "digits": (dict(iterations=8), SPEC,
               (16322.09751830995, 4162124, 61, 503.607421875, 0.7574164867401123)),
    "cifar_path_last_iterate": (dict(iterations=8, keep_best=False, l2=1e-3), FLIP_SPEC,
                                (16278.2595179528, 4150855, 61, 524.501220703125, 0.8916939496994019)),
}


@pytest.mark.parametrize("case", sorted(FINGERPRINTS))
def test_digits_and_cifar_paths_keep_their_images(teacher: nn.Module, case: str) -> None:
    overrides, spec, (image_sum, uint8_sum, label_sum, loss, next_draw) = FINGERPRINTS[case]
    method = make(teacher, spec, **overrides)
    try:
        batch = method.synthesize(16)
    finally:
        method.close()
    assert float(batch.images.double().sum()) == pytest.approx(image_sum, rel=1e-7)
    assert abs(int(to_uint8(batch.images).long().sum()) - uint8_sum) <= 8
    assert int(batch.labels.sum()) == label_sum
    assert batch.loss == pytest.approx(loss, rel=1e-5)
    # the random stream is where it was: same draws, same number of them
    assert float(torch.rand((), generator=method.ctx.generator)) == next_draw


def test_imagenet_preset_is_setting_0() -> None:
    cls = METHODS.get("deepinversion").Hparams
    hp = resolve_hparams(cls, "imagenet", {}, "deepinversion")
    assert (hp.iterations, hp.lowres_iterations, hp.lr_x, hp.lr_warmup) == (3000, 2000, 0.25, 100)
    assert tuple(hp.betas) == (0.5, 0.9) and hp.restart_per_stage
    assert (hp.r_feature, hp.first_bn_multiplier, hp.tv_l2, hp.l2) == (0.01, 10.0, 1e-4, 1e-5)
    assert hp.l2_reduction == "mean" and hp.jitter == 30 and hp.flip and hp.best_last_stage
    for preset in ("digits", "cifar10", "cifar100"):
        hp = resolve_hparams(cls, preset, {}, "deepinversion")
        assert hp.l2_reduction == "batch" and hp.lr_warmup == 0 and hp.lowres_iterations == 0
    with pytest.raises(UserError, match="l2_reduction='sum'; choose from: batch, mean"):
        resolve_hparams(cls, "digits", {"l2_reduction": "sum"}, "deepinversion")


class RecordingAdam(torch.optim.Adam):
    made: list["RecordingAdam"] = []

    def __init__(self, params, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.kwargs = kwargs
        self.lrs: list[float] = []
        RecordingAdam.made.append(self)

    def step(self, closure=None):
        self.lrs.append(self.param_groups[0]["lr"])
        return super().step(closure)


def expected_lrs(base: float, warmup: int, n: int) -> list[float]:
    """NVlabs utils.lr_cosine_policy(base, warmup, n) at steps 0..n-1."""
    return [base * (e + 1) / warmup if e < warmup
            else 0.5 * (1 + math.cos(math.pi * (e - warmup) / (n - warmup))) * base for e in range(n)]


def test_each_stage_gets_a_new_adam_and_a_new_warmup_cosine(teacher: nn.Module,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.optim, "Adam", RecordingAdam)
    RecordingAdam.made = []
    make(teacher, iterations=12, lowres_iterations=8, lr_x=0.25, lr_warmup=3).synthesize(4)
    first, second = RecordingAdam.made
    for opt in (first, second):
        assert tuple(opt.kwargs["betas"]) == (0.5, 0.9) and opt.kwargs["eps"] == 1e-8
    assert first.lrs == pytest.approx(expected_lrs(0.25, 3, 8))
    assert second.lrs == pytest.approx(expected_lrs(0.25, 3, 4))  # starts again at lr/warmup

    RecordingAdam.made = []
    make(teacher, iterations=12, lowres_iterations=8, lr_x=0.25, lr_warmup=3,
         restart_per_stage=False).synthesize(4)
    only, = RecordingAdam.made
    assert only.lrs == pytest.approx(expected_lrs(0.25, 3, 12))

    RecordingAdam.made = []
    make(teacher, iterations=6).synthesize(4)  # digits: one stage, plain cosine from lr_x
    only, = RecordingAdam.made
    assert only.lrs == pytest.approx([0.1 * 0.5 * (1 + math.cos(math.pi * i / 6)) for i in range(6)])


def test_lowres_stage_feeds_tv_and_l2_the_pooled_image(teacher: nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    method = make(teacher, iterations=5, lowres_iterations=3)
    module = sys.modules[type(method).__module__]
    tv_sizes: list[int] = []
    original_tv = module.total_variation

    def spy_tv(x: torch.Tensor):
        tv_sizes.append(x.shape[-1])
        return original_tv(x)

    monkeypatch.setattr(module, "total_variation", spy_tv)
    seen: list[int] = []
    handle = teacher.register_forward_pre_hook(lambda m, args: seen.append(args[0].shape[-1]))
    try:
        batch = method.synthesize(4)
    finally:
        handle.remove()
        method.close()
    assert seen == tv_sizes == [16, 16, 16, 32, 32]
    assert batch.images.shape == (4, 3, 32, 32)


@pytest.mark.parametrize("pool", [1, 2])
def test_l2_prior_reductions(teacher: nn.Module, pool: int) -> None:
    kw = dict(ce=0.0, r_feature=0.0, tv_l2=0.0, tv_l1=0.0, l2=1.0, jitter=0, flip=False)
    z = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(8, dtype=torch.long)
    x = F.avg_pool2d(z, pool) if pool > 1 else z
    batch, mean = make(teacher, l2_reduction="batch", **kw), make(teacher, l2_reduction="mean", **kw)
    try:
        still, round_info = torch.zeros(3, dtype=torch.long), RoundInfo.standalone()
        assert float(batch.step_loss(z, labels, pool, still, round_info)) == pytest.approx(float(x.norm()), rel=1e-5)
        per_image = x.flatten(1).norm(dim=1).mean()
        assert float(mean.step_loss(z, labels, pool, still, round_info)) == pytest.approx(float(per_image), rel=1e-5)
    finally:
        batch.close()
        mean.close()


def test_jitter_scales_with_the_stage_and_flips_are_drawn(teacher: nn.Module) -> None:
    method = make(teacher, FLIP_SPEC, jitter=30)
    augs = method.draw_augmentations([(300, 2), (300, 1)])
    low, full = torch.stack(augs[:300]), torch.stack(augs[300:])
    assert low[:, :2].abs().max() == 15 and full[:, :2].abs().max() == 30
    assert set(low[:, 2].tolist()) == set(full[:, 2].tolist()) == {0, 1}
    method.close()
    no_flip = make(teacher, SPEC, jitter=0)  # digits: no flip; jitter 0: no shift
    assert torch.stack(no_flip.draw_augmentations([(10, 1)])).abs().sum() == 0
    no_flip.close()


def test_keep_best_spans_both_stages_unless_last_stage_only(teacher: nn.Module) -> None:
    for last_only in (False, True):
        method = make(teacher, iterations=6, lowres_iterations=3, best_last_stage=last_only)
        losses: list[tuple[int, torch.Tensor]] = []
        loss_fn = method.step_loss

        def recording(z, labels, pool, aug, round, _fn=loss_fn):
            loss = _fn(z, labels, pool, aug, round)
            losses.append((pool, loss.detach().clone()))
            return loss

        method.step_loss = recording  # type: ignore[method-assign]
        batch = method.synthesize(4)
        method.close()
        pool_of_interest = {1} if last_only else {1, 2}
        assert batch.loss == pytest.approx(min(float(v) for p, v in losses if p in pool_of_interest))
