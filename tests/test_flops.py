"""FLOP accounting (engine.flops): counts against a hand computation, the meter's count-once cache,
its checkpoint round trip, the disabled and nested cases, and the measured rates."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

from dfkd_bench.engine.flops import FlopMeter, achieved_rate, count_flops, measured_peak_tflops

N, C_IN, C_OUT, K, H, W, CLASSES = 4, 3, 8, 3, 8, 8, 10
FEATURES = C_OUT * H * W

# Hand counts: a multiply-add is 2 FLOPs. The 3x3 padded conv gives every output element
# (N*C_OUT*H*W of them) a sum of C_IN*K*K products; the linear layer (N, FEATURES) @ (FEATURES, CLASSES).
CONV = 2 * N * C_OUT * H * W * C_IN * K * K
LINEAR = 2 * N * FEATURES * CLASSES
# Backward of the sum: the linear layer's grad-input dY (N, CLASSES) @ W (CLASSES, FEATURES) and
# grad-weight dY^T (CLASSES, N) @ X (N, FEATURES), each as many multiply-adds as its forward. The conv's
# grad-weight: each of the C_OUT*C_IN*K*K weights sums N*H*W products of input and output gradient,
# the forward's multiply-add count again; its grad-input (a transposed conv) as many. Autograd computes
# only the gradients some leaf needs: the conv's grad-input only when the image requires grad, the
# weight gradients not under autograd.grad with respect to the image alone. Bias gradients are sums.
LINEAR_GRAD_INPUT = 2 * N * CLASSES * FEATURES
LINEAR_GRAD_WEIGHT = 2 * CLASSES * N * FEATURES
CONV_GRAD_WEIGHT = 2 * C_OUT * C_IN * K * K * N * H * W
CONV_GRAD_INPUT = 2 * N * C_IN * H * W * C_OUT * K * K


def small_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(C_IN, C_OUT, K, padding=1, bias=False), nn.ReLU(), nn.Flatten(),
                         nn.Linear(FEATURES, CLASSES))


def test_forward_flops_match_the_hand_count() -> None:
    model, x = small_model(), torch.randn(N, C_IN, H, W)
    with torch.no_grad():
        assert count_flops(lambda: model(x)) == CONV + LINEAR


def test_forward_backward_flops_match_the_hand_count() -> None:
    model, x = small_model(), torch.randn(N, C_IN, H, W)
    expected = CONV + LINEAR + LINEAR_GRAD_INPUT + LINEAR_GRAD_WEIGHT + CONV_GRAD_WEIGHT
    assert count_flops(lambda: model(x).sum().backward()) == expected


def test_an_image_gradient_adds_the_conv_grad_input() -> None:
    model, x = small_model(), torch.randn(N, C_IN, H, W, requires_grad=True)
    expected = CONV + LINEAR + LINEAR_GRAD_INPUT + LINEAR_GRAD_WEIGHT + CONV_GRAD_WEIGHT + CONV_GRAD_INPUT
    assert count_flops(lambda: model(x).sum().backward()) == expected


def test_autograd_grad_on_a_leaf_input_counts_only_the_input_gradient() -> None:
    """Synthesis takes autograd.grad of optimised pixels or latents (plain FlopCounterMode fails there)."""
    model, x = small_model(), torch.randn(N, C_IN, H, W, requires_grad=True)
    expected = CONV + LINEAR + LINEAR_GRAD_INPUT + CONV_GRAD_INPUT
    assert count_flops(lambda: torch.autograd.grad(model(x).sum(), [x])) == expected


def linear_step(meter: FlopMeter, model: nn.Module, batch: int) -> None:
    """One forward+backward of a bias-free linear model on `batch` rows, measured under key `batch`."""
    with meter.measure("kd", batch):
        model(torch.randn(batch, 16)).sum().backward()


@pytest.fixture
def entries(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Records every entry into a FlopCounterMode (the class engine.flops counts with derives from it)."""
    entered: list[int] = []
    original = FlopCounterMode.__enter__

    def recording(self: FlopCounterMode) -> FlopCounterMode:
        entered.append(1)
        return original(self)

    monkeypatch.setattr(FlopCounterMode, "__enter__", recording)
    return entered


def test_a_repeated_key_is_counted_once_and_added_each_time(entries: list[int]) -> None:
    meter, model = FlopMeter(), nn.Linear(16, 4, bias=False)
    one = 2 * 8 * 16 * 4 * 2  # forward + grad-weight (the input needs no grad)
    for _ in range(3):
        linear_step(meter, model, 8)
    assert len(entries) == 1 and meter.totals == {"kd": 3 * one}
    linear_step(meter, model, 16)
    assert len(entries) == 2 and meter.totals == {"kd": 3 * one + 2 * one}
    assert meter.tflop("kd") == 5 * one / 1e12 and meter.tflop("synth") == 0.0


def test_state_dict_round_trips_through_a_weights_only_checkpoint(tmp_path, entries: list[int]) -> None:
    meter, model = FlopMeter(), nn.Linear(16, 4, bias=False)
    with meter.measure("synth", ("round", 32, False)):
        model(torch.randn(8, 16))
    linear_step(meter, model, 8)
    torch.save({"flops": meter.state_dict()}, tmp_path / "ckpt.pt")
    resumed = FlopMeter()
    resumed.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["flops"])
    assert resumed.totals == meter.totals and resumed.state_dict() == meter.state_dict()
    before = len(entries)
    with resumed.measure("synth", ("round", 32, False)):
        model(torch.randn(8, 16))
    linear_step(resumed, model, 8)
    assert len(entries) == before  # both keys came back cached
    assert resumed.totals == {phase: 2 * total for phase, total in meter.totals.items()}


def test_disabled_meter_runs_the_body_and_counts_nothing(entries: list[int]) -> None:
    meter, ran = FlopMeter(enabled=False), []
    with meter.measure("eval", 1):
        ran.append(nn.Linear(16, 4)(torch.randn(2, 16)))
    assert ran and not entries and meter.totals == {} and meter.tflop("eval") == 0.0


def test_nested_measures_do_not_double_count() -> None:
    meter, model = FlopMeter(), nn.Linear(16, 4, bias=False)
    one = 2 * 8 * 16 * 4 * 2
    for _ in range(2):  # first: the outer counts; second: the outer adds its cache
        with meter.measure("synth", "outer"):
            linear_step(meter, model, 8)
    assert meter.totals == {"synth": 2 * one}
    inner_only = FlopMeter()
    linear_step(inner_only, model, 8)  # the key the nested call saw is still counted on its own
    assert inner_only.totals == {"kd": one}
    assert count_flops(lambda: linear_step(inner_only, model, 8)) == one  # counted by count_flops alone
    assert inner_only.totals == {"kd": one}


def test_rates_are_finite_and_positive() -> None:
    assert achieved_rate(2.0, 4.0) == 0.5 and achieved_rate(1.0, 0.0) == 0.0
    for dtype in (torch.float32, torch.bfloat16):
        peak = measured_peak_tflops(torch.device("cpu"), dtype, size=128, repeats=2)
        assert math.isfinite(peak) and peak > 0
