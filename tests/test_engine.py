"""Engine units against hand computations: BN-statistics loss (first-layer multiplier, momentum),
KD and adversarial losses, total variation, the uint8 bank, label layouts, batched augmentation,
best-iterate keeping, RNG checkpointing, evaluation."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from dfkd_bench.engine import (
    BNStatisticsLoss,
    Normalize,
    SyntheticBank,
    adversarial_loss,
    balanced_labels,
    js_divergence,
    kd_loss,
    random_labels,
    resize,
    student_augment,
    total_variation,
)
from dfkd_bench.data.split import EvalSplit
from dfkd_bench.engine.augment import random_crop, random_flip
from dfkd_bench.engine.checkpoint import restore_rng_state, rng_state
from dfkd_bench.engine.evaluate import accuracy
from dfkd_bench.engine.synthesis import BestIterate

# --------------------------------------------------------------------------- BN-statistics loss


def _two_bn_model() -> nn.Sequential:
    """BN(2) -> BN(2) in eval mode with known running statistics and identity affine parameters,
    so the second layer's input is (x - rm1) / sqrt(rv1 + eps), computable by hand."""
    model = nn.Sequential(nn.BatchNorm2d(2), nn.BatchNorm2d(2)).eval()
    bn1, bn2 = model
    bn1.running_mean.copy_(torch.tensor([0.5, -1.0]))
    bn1.running_var.copy_(torch.tensor([2.0, 0.25]))
    bn2.running_mean.copy_(torch.tensor([0.1, 0.3]))
    bn2.running_var.copy_(torch.tensor([0.8, 1.5]))
    return model


def _bn_inputs(model: nn.Sequential, x: np.ndarray) -> list[np.ndarray]:
    bn1 = model[0]
    rm = bn1.running_mean.double().numpy().reshape(1, -1, 1, 1)
    rv = bn1.running_var.double().numpy().reshape(1, -1, 1, 1)
    return [x, (x - rm) / np.sqrt(rv + bn1.eps)]


def _stats(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and biased variance, by explicit sums over N, H, W."""
    n = a.shape[0] * a.shape[2] * a.shape[3]
    mean = a.sum(axis=(0, 2, 3)) / n
    var = ((a - mean.reshape(1, -1, 1, 1)) ** 2).sum(axis=(0, 2, 3)) / n
    return mean, var


def _bn_formula(model: nn.Sequential, means: list[np.ndarray], variances: list[np.ndarray],
                first_multiplier: float = 1.0) -> float:
    total = 0.0
    for i, (layer, mu, var) in enumerate(zip(model, means, variances)):
        rm, rv = layer.running_mean.double().numpy(), layer.running_var.double().numpy()
        term = math.sqrt(((mu - rm) ** 2).sum()) + math.sqrt(((var - rv) ** 2).sum())
        total += (first_multiplier if i == 0 else 1.0) * term
    return total


def _input(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.3, 1.7, size=(3, 2, 4, 5))


def _loss_on(bn: BNStatisticsLoss, model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with bn.collect():
        model(torch.tensor(x, dtype=torch.float32))
    return bn()


@pytest.mark.parametrize("first_multiplier", [1.0, 10.0])
def test_bn_loss_matches_hand_formula(first_multiplier: float) -> None:
    model = _two_bn_model()
    x = _input(0)
    stats = [_stats(a) for a in _bn_inputs(model, x)]
    expected = _bn_formula(model, [s[0] for s in stats], [s[1] for s in stats], first_multiplier)
    bn = BNStatisticsLoss(model, first_multiplier=first_multiplier)
    assert _loss_on(bn, model, x).item() == pytest.approx(expected, rel=1e-5)


def test_bn_loss_is_zero_when_batch_matches_running_stats() -> None:
    model = nn.Sequential(nn.BatchNorm2d(2)).eval()
    x = _input(1)
    mean, var = _stats(x)
    model[0].running_mean.copy_(torch.tensor(mean))
    model[0].running_var.copy_(torch.tensor(var))
    assert _loss_on(BNStatisticsLoss(model), model, x).item() == pytest.approx(0.0, abs=1e-5)


def test_bn_loss_only_sees_forwards_inside_collect_and_has_gradient() -> None:
    model = _two_bn_model()
    bn = BNStatisticsLoss(model)
    model(torch.randn(2, 2, 3, 3))  # outside collect(): nothing recorded
    assert bn.records() == []
    x = torch.tensor(_input(2), dtype=torch.float32, requires_grad=True)
    with bn.collect():
        model(x)
    loss = bn()
    assert len(bn.records()) == 2
    loss.backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bn_loss_momentum_smooths_with_the_ema_of_earlier_rounds() -> None:
    m = 0.9
    model = _two_bn_model()
    bn = BNStatisticsLoss(model, momentum=m, first_multiplier=2.0)
    xs = [_input(10), _input(11), _input(12)]
    s = [[_stats(a) for a in _bn_inputs(model, x)] for x in xs]  # s[round][layer] = (mean, var)

    # Round 1: no EMA yet, the plain batch statistics.
    first = _loss_on(bn, model, xs[0]).item()
    assert first == pytest.approx(_bn_formula(model, [t[0] for t in s[0]], [t[1] for t in s[0]], 2.0), rel=1e-5)
    bn.update_momentum()  # EMA <- round-1 statistics

    # Round 2: (1-m) * batch + m * EMA.
    mu2 = [(1 - m) * s[1][i][0] + m * s[0][i][0] for i in range(2)]
    var2 = [(1 - m) * s[1][i][1] + m * s[0][i][1] for i in range(2)]
    second = _loss_on(bn, model, xs[1]).item()
    assert second == pytest.approx(_bn_formula(model, mu2, var2, 2.0), rel=1e-5)
    plain = _bn_formula(model, [t[0] for t in s[1]], [t[1] for t in s[1]], 2.0)
    assert abs(second - plain) > 1e-3  # the smoothing really changed the loss
    bn.update_momentum()  # EMA <- the smoothed round-2 statistics

    # Round 3: the EMA is the recursion (1-m) s2 + m s1.
    mu3 = [(1 - m) * s[2][i][0] + m * mu2[i] for i in range(2)]
    var3 = [(1 - m) * s[2][i][1] + m * var2[i] for i in range(2)]
    assert _loss_on(bn, model, xs[2]).item() == pytest.approx(_bn_formula(model, mu3, var3, 2.0), rel=1e-5)

    # The EMA travels through state_dict (resume).
    clone = BNStatisticsLoss(_two_bn_model(), momentum=m, first_multiplier=2.0)
    clone.load_state_dict(bn.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(clone.ema_mean, bn.ema_mean))


def test_bn_loss_without_momentum_ignores_update_momentum() -> None:
    model = _two_bn_model()
    bn = BNStatisticsLoss(model, momentum=0.0)
    _loss_on(bn, model, _input(20))
    bn.update_momentum()
    x = _input(21)
    s = [_stats(a) for a in _bn_inputs(model, x)]
    assert _loss_on(bn, model, x).item() == pytest.approx(_bn_formula(model, [t[0] for t in s],
                                                                      [t[1] for t in s]), rel=1e-5)


# --------------------------------------------------------------------------- KD, adversarial, JS, TV


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p * (np.log(p) - np.log(q))).sum(axis=1)


S_LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [1.0, 1.0, 0.0], [-2.0, 4.0, 0.5]])
T_LOGITS = np.array([[3.0, -0.5, 0.0], [1.5, 0.0, 1.0], [0.0, 2.0, 0.5], [0.5, 3.0, -1.0]])


@pytest.mark.parametrize("temperature", [1.0, 4.0, 20.0])
def test_kd_loss_is_t_squared_kl_at_temperature(temperature: float) -> None:
    p_t, p_s = _softmax(T_LOGITS / temperature), _softmax(S_LOGITS / temperature)
    expected = temperature ** 2 * _kl_rows(p_t, p_s).mean()
    got = kd_loss(torch.tensor(S_LOGITS, dtype=torch.float32), torch.tensor(T_LOGITS, dtype=torch.float32),
                  temperature)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise() -> None:
    t = torch.tensor(T_LOGITS, dtype=torch.float32)
    assert kd_loss(t.clone(), t, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kd_loss(t + torch.tensor([0.0, 1.0, 0.0]), t, 4.0).item() > 1e-3


def test_adversarial_loss_counts_only_agreeing_samples() -> None:
    # argmax S = [0, 2, 0, 1], argmax T = [0, 0, 1, 1]: samples 0 and 3 agree.
    agree = np.array([1.0, 0.0, 0.0, 1.0])
    kl = _kl_rows(_softmax(T_LOGITS), _softmax(S_LOGITS))
    expected = -(agree * kl).sum() / len(agree)
    s, t = torch.tensor(S_LOGITS, dtype=torch.float32), torch.tensor(T_LOGITS, dtype=torch.float32)
    got = adversarial_loss(s, t).item()
    assert got == pytest.approx(expected, rel=1e-5)
    assert got < 0
    # Changing a disagreeing sample's logits (keeping it disagreeing) does not change the loss.
    s2 = s.clone()
    s2[1] = torch.tensor([-5.0, 1.0, 9.0])
    assert adversarial_loss(s2, t).item() == pytest.approx(got, rel=1e-6)


def test_adversarial_loss_is_zero_when_all_disagree() -> None:
    s = torch.tensor([[5.0, 0.0], [0.0, 5.0]])
    t = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    assert adversarial_loss(s, t).item() == 0.0


def test_js_divergence_zero_for_equal_and_symmetric() -> None:
    s, t = torch.tensor(S_LOGITS, dtype=torch.float32), torch.tensor(T_LOGITS, dtype=torch.float32)
    assert js_divergence(t, t, 3.0).item() == pytest.approx(0.0, abs=1e-6)
    p, q = _softmax(S_LOGITS / 3), _softmax(T_LOGITS / 3)
    m = (p + q) / 2
    expected = 0.5 * (_kl_rows(p, m).mean() + _kl_rows(q, m).mean())
    assert js_divergence(s, t, 3.0).item() == pytest.approx(expected, rel=1e-4)
    assert js_divergence(t, s, 3.0).item() == pytest.approx(expected, rel=1e-4)


def test_total_variation_by_hand() -> None:
    x = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]])
    l1, l2 = total_variation(x)
    # horizontal diffs -1,-1; vertical -2,-2; anti-diagonal 2-1=1; diagonal 0-3=-3
    assert l2.item() == pytest.approx(math.sqrt(2) + math.sqrt(8) + 1 + 3, rel=1e-6)
    assert l1.item() == pytest.approx(1 + 2 + 1 + 3, rel=1e-6)


# --------------------------------------------------------------------------- the bank


def _constant_images(values: list[float], res: int) -> torch.Tensor:
    return torch.tensor(values).view(-1, 1, 1, 1).expand(-1, 3, res, res).contiguous()


def test_bank_stores_uint8_at_native_resolution_and_reads_back() -> None:
    g = torch.Generator().manual_seed(0)
    x16, x32 = torch.rand(5, 3, 16, 16, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    bank = SyntheticBank("cpu")
    bank.add(x16, torch.arange(5))
    bank.add(x32, torch.tensor([7, 8, 9]))
    assert len(bank) == 8 and bank.resolutions == [16, 32]
    assert bank.images(16).dtype == torch.uint8 and bank.images(16).shape == (5, 3, 16, 16)
    assert bank.images(32).shape == (3, 3, 32, 32)
    assert bank.nbytes() == 5 * 3 * 16 * 16 + 3 * 3 * 32 * 32
    tol = 1 / 255 / 2 + 1e-6
    assert (bank.images(16).float() / 255 - x16).abs().max() <= tol
    assert (bank.images(32).float() / 255 - x32).abs().max() <= tol
    assert bank.labels(32).tolist() == [7, 8, 9]
    # out-of-range values are clamped, a second batch of a resolution is appended
    bank.add(torch.tensor([-0.5, 1.5]).view(2, 1, 1, 1).expand(2, 3, 16, 16), torch.tensor([1, 2]))
    assert bank.images(16).shape[0] == 7 and len(bank) == 10
    assert bank.images(16)[5].max() == 0 and bank.images(16)[6].min() == 255


def _labelled_bank() -> SyntheticBank:
    """Constant images whose value encodes the label: image value = label / 10."""
    bank = SyntheticBank("cpu")
    bank.add(_constant_images([0.0, 0.1, 0.2, 0.3, 0.4], 16), torch.tensor([0, 1, 2, 3, 4]))
    bank.add(_constant_images([0.5, 0.6, 0.7], 32), torch.tensor([5, 6, 7]))
    return bank


def test_bank_sample_keeps_resolutions_apart_and_labels_aligned() -> None:
    bank = _labelled_bank()
    groups = bank.sample(400, torch.Generator().manual_seed(1))
    assert sorted(x.shape[-1] for x, _ in groups) == [16, 32]
    assert sum(y.shape[0] for _, y in groups) == 400
    for x, y in groups:
        assert x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        value = x.flatten(1).mean(1)
        assert torch.allclose(value, y.float() / 10, atol=1 / 255)
        assert set(y.tolist()) <= ({0, 1, 2, 3, 4} if x.shape[-1] == 16 else {5, 6, 7})
    # uniform over images: 5 of the 8 are 16 px
    n16 = next(y.shape[0] for x, y in groups if x.shape[-1] == 16)
    assert 0.5 < n16 / 400 < 0.75


def test_bank_sample_with_size_resizes_and_merges() -> None:
    bank = _labelled_bank()
    groups = bank.sample(64, torch.Generator().manual_seed(2), size=24)
    assert len(groups) == 1
    x, y = groups[0]
    assert x.shape == (64, 3, 24, 24) and y.shape == (64,)
    assert {int(v) < 5 for v in y} == {True, False}  # both resolutions contributed
    assert torch.allclose(x.flatten(1).mean(1), y.float() / 10, atol=1 / 255)  # constant images stay constant


def test_bank_single_resolution_sample_and_determinism() -> None:
    bank = SyntheticBank("cpu")
    bank.add(_constant_images([0.2, 0.4], 8), torch.tensor([2, 4]))
    a = bank.sample(10, torch.Generator().manual_seed(3))
    b = bank.sample(10, torch.Generator().manual_seed(3))
    assert len(a) == 1 and a[0][0].shape == (10, 3, 8, 8)
    assert torch.equal(a[0][0], b[0][0]) and torch.equal(a[0][1], b[0][1])


def test_bank_state_dict_round_trip_through_torch_save() -> None:
    bank = _labelled_bank()
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = SyntheticBank("cpu")
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    assert restored.resolutions == [16, 32] and len(restored) == len(bank)
    for r in (16, 32):
        assert torch.equal(restored.images(r), bank.images(r))
        assert torch.equal(restored.labels(r), bank.labels(r))
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    for (xa, ya), (xb, yb) in zip(bank.sample(20, g1), restored.sample(20, g2)):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_resize_is_identity_at_same_size_and_resizes_otherwise() -> None:
    x = torch.rand(2, 3, 16, 16)
    assert resize(x, 16) is x
    assert resize(x, 32).shape == (2, 3, 32, 32)
    assert resize(x, 8).shape == (2, 3, 8, 8)
    assert torch.allclose(resize(torch.full((1, 3, 16, 16), 0.25), 8), torch.full((1, 3, 8, 8), 0.25))


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("n,classes", [(23, 5), (40, 10), (9, 3)])
def test_balanced_labels_have_each_class_floor_n_over_c_times(n: int, classes: int) -> None:
    labels = balanced_labels(n, classes, torch.Generator().manual_seed(0))
    assert labels.shape == (n,) and labels.dtype == torch.long
    assert labels.min() >= 0 and labels.max() < classes
    counts = torch.bincount(labels, minlength=classes)
    base = n // classes
    assert (counts >= base).all()
    assert (counts - base).sum() == n % classes


def test_balanced_labels_with_fewer_samples_than_classes() -> None:
    labels = balanced_labels(3, 10, torch.Generator().manual_seed(0))
    assert labels.shape == (3,) and ((0 <= labels) & (labels < 10)).all()


def test_random_labels_in_range_and_reproducible() -> None:
    a = random_labels(200, 7, torch.Generator().manual_seed(5))
    b = random_labels(200, 7, torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and a.shape == (200,)
    assert set(a.tolist()) == set(range(7))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_labels_with_a_cuda_generator() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    assert random_labels(10, 5, g, "cuda").device.type == "cuda"
    assert balanced_labels(12, 5, g, "cuda").device.type == "cuda"


# --------------------------------------------------------------------------- augmentation


def test_random_crop_is_a_shift_of_the_padded_image() -> None:
    pad = 4
    x = torch.rand(32, 3, 12, 12, generator=torch.Generator().manual_seed(0)) + 0.1  # no zeros inside
    out = random_crop(x, pad, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (pad,) * 4)
    offsets = set()
    for i in range(x.shape[0]):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(out[i], padded[i, :, dy:dy + 12, dx:dx + 12])]
        assert len(matches) == 1, f"image {i} is not one window of its padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # independent offsets per image


def test_random_flip_flips_about_half() -> None:
    x = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    out = random_flip(x, torch.Generator().manual_seed(1))
    flipped = [torch.equal(out[i], x[i].flip(2)) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f != k for f, k in zip(flipped, kept))  # each image is exactly one of the two
    assert 16 < sum(flipped) < 48


def test_student_augment_keeps_shape_and_respects_hflip() -> None:
    x = torch.rand(8, 3, 32, 32)
    assert student_augment(x, hflip=True, generator=torch.Generator().manual_seed(0)).shape == x.shape
    big = torch.rand(4, 3, 64, 64)
    out = student_augment(big, hflip=False, generator=torch.Generator().manual_seed(0))
    assert out.shape == big.shape and torch.isfinite(out).all()
    # hflip=False (digits): a left-to-right ramp stays increasing; the crop pads at most 4 px each side.
    ramp = torch.linspace(0.1, 1.0, 32).view(1, 1, 1, 32).expand(16, 3, 32, 32).contiguous()
    out = student_augment(ramp, hflip=False, generator=torch.Generator().manual_seed(0))
    inner = out[:, :, :, 4:-4]
    assert (inner[..., 1:] >= inner[..., :-1]).all()


def test_normalize_by_hand() -> None:
    norm = Normalize((0.5, 0.25, 0.0), (0.5, 2.0, 1.0))
    x = torch.tensor([1.0, 0.5, 0.2]).view(1, 3, 1, 1)
    assert torch.allclose(norm(x).flatten(), torch.tensor([1.0, 0.125, 0.2]))


# --------------------------------------------------------------------------- synthesis helpers, RNG, eval


def test_best_iterate_keeps_a_clone_of_the_lowest_loss_images() -> None:
    images = torch.zeros(2, 3, 4, 4)
    best = BestIterate()
    best.update(torch.tensor(5.0), images)
    images += 1.0  # the optimiser moves the tensor in place
    best.update(torch.tensor(7.0), images)  # worse: not kept
    assert best.loss == 5.0 and torch.equal(best.images, torch.zeros(2, 3, 4, 4))
    images += 1.0
    best.update(torch.tensor(3.0), images)
    images += 1.0
    assert best.loss == 3.0 and torch.equal(best.images, torch.full((2, 3, 4, 4), 2.0))


def test_rng_state_round_trip() -> None:
    g = torch.Generator().manual_seed(9)
    state = rng_state(g)
    a = (torch.rand(3), torch.rand(3, generator=g))
    restore_rng_state(state, g)
    b = (torch.rand(3), torch.rand(3, generator=g))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


class _FirstPixelClassifier(nn.Module):
    """Predicts the class from the first row of the first channel (logits = pixels)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, 0, 0, :4]


def test_accuracy_in_percent_and_restores_mode() -> None:
    model = _FirstPixelClassifier().train()
    images = torch.zeros(5, 3, 4, 4)
    for i, cls in enumerate([0, 1, 2, 3, 0]):
        images[i, 0, 0, cls] = 1.0
    labels = torch.tensor([0, 1, 2, 0, 1])  # 3 of 5 right
    norm = Normalize((0.0,) * 3, (1.0,) * 3)
    acc = accuracy(model, EvalSplit(images, labels), norm, batch_size=2)
    assert acc == pytest.approx(60.0)
    assert model.training
    as_uint8 = EvalSplit(images.mul(255).to(torch.uint8), labels)  # cached splits are uint8
    assert accuracy(model, as_uint8, norm, batch_size=3) == pytest.approx(60.0)


def test_equal_schedules_spend_the_same_steps_per_image_whatever_the_round_size() -> None:
    from dfkd_bench.schedule import equal_schedule

    # 40 steps per 64 images and 160 per 256 are the same rate: equal budgets at every ratio.
    small_rounds = equal_schedule(718, 64, 40 / 64, warmup_rounds=1, warmup_fraction=1.0, final_kd_steps=0)
    big_rounds = equal_schedule(718, 256, 160 / 256, warmup_rounds=1, warmup_fraction=1.0, final_kd_steps=0)
    assert small_rounds.kd_steps == big_rounds.kd_steps == round(40 * 718 / 64)
    small = [r.kd_steps for r in small_rounds.rounds if not r.warmup]
    assert max(small) - min(small) <= 1
    # A partial single round (a tiny ratio) gets its share, not a full round's steps.
    tiny = equal_schedule(29, 256, 160 / 256, warmup_rounds=1, warmup_fraction=1.0, final_kd_steps=0)
    assert [r.kd_steps for r in tiny.rounds] == [round(160 * 29 / 256)]


def test_timer_spans_add_up_like_phases_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    from dfkd_bench.engine import timing

    class Clock:
        now = 0.0

        def perf_counter(self) -> float:
            return self.now

    clock = Clock()
    monkeypatch.setattr(timing, "time", clock)
    timer = timing.PhaseTimer(torch.device("cpu"))
    for _ in range(3):
        with timer.span("kd"):
            clock.now += 0.5
    timer.flush()  # nothing pending on the CPU: spans read the clock as they end
    assert timer.get("kd") == pytest.approx(1.5)
