"""BN statistics keyed by layer: each batch statistic is compared with the running statistics of the
layer that produced it, whatever order a model calls its BN layers in, whether it skips one or calls
one twice; the first-layer multiplier follows registration order; the momentum buffer follows the
(layer, call) key through rounds and state_dict."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn as nn

from dfkd_bench.engine import BNStatisticsLoss
from dfkd_bench.models import create_model

C = 3


def _randomise(model: nn.Module, seed: int) -> nn.Module:
    """Distinct running statistics in every BN layer (so a mis-pairing changes the loss)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 2 + 0.5)
    return model.eval()


class Routed(nn.Module):
    """BN layers a, b, c (registered in that order) applied in the order `route` names them,
    with a fixed elementwise map between calls so every call sees a different input."""

    def __init__(self, route: str) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.BatchNorm2d(C), nn.BatchNorm2d(C), nn.BatchNorm2d(C)
        self.route = route
        self.inputs: list[tuple[str, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs = []
        for name in self.route:
            self.inputs.append((name, x.detach().double()))
            x = torch.tanh(getattr(self, name)(x)) * 1.5 + 0.2
        return x


def _hand_loss(model: Routed, first_multiplier: float = 1.0,
               ema: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] | None = None,
               m: float = 0.0) -> tuple[float, dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]]:
    """The loss by explicit sums: every recorded call against its own layer's running statistics,
    the multiplier on layer `a` (registered first); returns the (smoothed) statistics by (layer, call)."""
    total, seen, stats = 0.0, {}, {}
    for name, x in model.inputs:
        a = x.numpy()
        n = a.shape[0] * a.shape[2] * a.shape[3]
        mu = a.sum(axis=(0, 2, 3)) / n
        var = ((a - mu.reshape(1, -1, 1, 1)) ** 2).sum(axis=(0, 2, 3)) / n
        k = seen.get(name, 0)
        seen[name] = k + 1
        if ema is not None and (name, k) in ema:
            mu = (1 - m) * mu + m * ema[(name, k)][0]
            var = (1 - m) * var + m * ema[(name, k)][1]
        stats[(name, k)] = (mu, var)
        layer = getattr(model, name)
        rm, rv = layer.running_mean.double().numpy(), layer.running_var.double().numpy()
        term = math.sqrt(((mu - rm) ** 2).sum()) + math.sqrt(((var - rv) ** 2).sum())
        total += (first_multiplier if name == "a" else 1.0) * term
    return total, stats


def _x(seed: int) -> torch.Tensor:
    return torch.tensor(np.random.default_rng(seed).normal(0.3, 1.7, size=(4, C, 3, 5)), dtype=torch.float32)


def _loss(bn: BNStatisticsLoss, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with bn.collect():
        model(x)
    return bn()


def _position_paired(model: nn.Module, x: torch.Tensor, first_multiplier: float) -> float:
    """The loss as it was computed before statistics were keyed by layer: statistics appended in
    call order and zipped with the BN layers in registration order, the multiplier on position 0."""
    layers = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: Any) -> None:
        var, mean = torch.var_mean(inputs[0].float(), dim=(0, 2, 3), unbiased=False)
        calls.append((mean, var))

    handles = [layer.register_forward_hook(hook) for layer in layers]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    total = torch.zeros(())
    for i, (layer, (mu, var)) in enumerate(zip(layers, calls)):
        term = torch.linalg.vector_norm(mu - layer.running_mean) + torch.linalg.vector_norm(var - layer.running_var)
        total = total + (first_multiplier if i == 0 else 1.0) * term
    return total.item()


# --- ordinary models: the same value as the position-paired loss -------------------------------------------


@pytest.mark.parametrize("first_multiplier", [1.0, 10.0])
def test_digits_teacher_loss_unchanged(digits_teacher: Any, first_multiplier: float) -> None:
    model = digits_teacher[0].eval()
    x = torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = _position_paired(model, x, first_multiplier)
    bn = BNStatisticsLoss(model, first_multiplier=first_multiplier)
    try:
        with torch.no_grad():
            after = _loss(bn, model, x).item()
    finally:
        bn.close()
    assert after == pytest.approx(before, rel=1e-6)


@pytest.mark.parametrize("arch", ["resnet18", "wrn16_1"])
def test_cifar_zoo_loss_unchanged(arch: str) -> None:
    torch.manual_seed(0)
    model = _randomise(create_model(arch, 10), seed=1)
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    bn = BNStatisticsLoss(model, first_multiplier=10.0)
    with torch.no_grad():
        after = _loss(bn, model, x).item()
    assert len(bn.records()) == len(bn.layer_names)  # one call per layer
    assert list(bn.stats.modules.values()) == [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert after == pytest.approx(_position_paired(model, x, 10.0), rel=1e-6)


# --- out of order, skipped, reused ------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["abc", "cab", "bca", "ac", "bc", "abac", "aa", "cbc"],
                         ids=["in-order", "out-of-order", "first-called-last", "skips-b", "skips-first",
                              "reuses-a", "only-a-twice", "reuses-c"])
@pytest.mark.parametrize("first_multiplier", [1.0, 10.0])
def test_each_call_meets_its_own_layer(route: str, first_multiplier: float) -> None:
    model = _randomise(Routed(route), seed=5)
    bn = BNStatisticsLoss(model, first_multiplier=first_multiplier)
    got = _loss(bn, model, _x(0)).item()
    expected, _ = _hand_loss(model, first_multiplier)
    assert got == pytest.approx(expected, rel=1e-5)
    # The records name the layer of every call: registration index, call number within the forward.
    names = {"a": 0, "b": 1, "c": 2}
    keys = sorted((names[n], route[:i].count(n)) for i, n in enumerate(route))
    assert [(i, k) for i, k, *_ in bn.records()] == keys


def test_out_of_order_differs_from_position_pairing() -> None:
    """The case the keyed statistics fix: the old pairing compared b's batch with a's statistics."""
    model = _randomise(Routed("cab"), seed=5)
    x = _x(1)
    keyed = _loss(BNStatisticsLoss(model, first_multiplier=10.0), model, x).item()
    assert keyed == pytest.approx(_hand_loss(model, 10.0)[0], rel=1e-5)
    assert abs(keyed - _position_paired(model, x, 10.0)) > 1e-2 * keyed


def test_first_multiplier_follows_registration_order() -> None:
    """Layer a is registered first: the multiplier scales a's term whether a is called first or last,
    every call of a when it is reused, and nothing when the forward skips a."""
    x = _x(2)
    for route in ("abc", "bca", "aba"):
        model = _randomise(Routed(route), seed=6)
        plain = _loss(BNStatisticsLoss(model), model, x).item()
        scaled = _loss(BNStatisticsLoss(model, first_multiplier=10.0), model, x).item()
        a_terms = _hand_loss(model, 2.0)[0] - _hand_loss(model, 1.0)[0]  # the a terms, by difference
        assert a_terms > 0
        assert scaled - plain == pytest.approx(9.0 * a_terms, rel=1e-4)
    model = _randomise(Routed("bc"), seed=6)
    assert (_loss(BNStatisticsLoss(model, first_multiplier=10.0), model, x).item()
            == pytest.approx(_loss(BNStatisticsLoss(model), model, x).item(), rel=1e-6))


def test_shared_module_is_one_layer() -> None:
    """A BN layer registered under two names is one layer (modules() lists it once); both calls count."""
    model = Routed("ab")
    model.d = model.a  # the same module again, under a second name
    model.route = "abd"
    bn = BNStatisticsLoss(model)
    assert bn.layer_names == ["a", "b", "c"] and list(bn.stats.modules.values()) == [model.a, model.b, model.c]
    with bn.collect():
        model(_x(3))
    assert [(i, k) for i, k, *_ in bn.records()] == [(0, 0), (0, 1), (1, 0)]
    calls = bn.stats.calls()
    assert len(calls["a"]) == 2 and "c" not in calls


def test_no_recorded_call_is_an_error() -> None:
    model = Routed("abc")
    bn = BNStatisticsLoss(model)
    model(_x(0))  # outside collect()
    with pytest.raises(RuntimeError, match="no BatchNorm2d call"):
        bn()


def test_loss_has_gradient_through_a_reused_layer() -> None:
    model = _randomise(Routed("aa"), seed=3)
    x = _x(4).requires_grad_()
    _loss(BNStatisticsLoss(model), model, x).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# --- the momentum buffer ------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["cab", "abac", "bc"])
def test_momentum_buffer_is_keyed_by_layer_and_call(route: str) -> None:
    m = 0.9
    model = _randomise(Routed(route), seed=7)
    bn = BNStatisticsLoss(model, momentum=m, first_multiplier=3.0)
    ema = None
    for r in range(3):
        got = _loss(bn, model, _x(10 + r)).item()
        expected, stats = _hand_loss(model, 3.0, ema, m)
        assert got == pytest.approx(expected, rel=1e-5), f"round {r}"
        bn.update_momentum()
        ema = stats
    names = {"a": 0, "b": 1, "c": 2}
    assert bn.ema_keys == sorted((names[n], k) for n, k in ema)

    # Resume: a fresh loss on a fresh model with the same statistics continues identically.
    clone_model = _randomise(Routed(route), seed=7)
    clone = BNStatisticsLoss(clone_model, momentum=m, first_multiplier=3.0)
    clone.load_state_dict(bn.state_dict())
    x = _x(20)
    assert _loss(clone, clone_model, x).item() == pytest.approx(_loss(bn, model, x).item(), rel=1e-6)


def test_momentum_keeps_the_buffer_of_a_call_the_latest_forward_skipped() -> None:
    m = 0.5
    model = _randomise(Routed("abc"), seed=8)
    bn = BNStatisticsLoss(model, momentum=m)
    _loss(bn, model, _x(30))
    bn.update_momentum()
    kept = bn.ema_mean[1].clone()  # layer b
    model.route = "ac"
    _loss(bn, model, _x(31))
    bn.update_momentum()
    assert bn.ema_keys == [(0, 0), (1, 0), (2, 0)]
    assert torch.equal(bn.ema_mean[1], kept)
    # A call seen for the first time (a second call of a) starts from its plain batch statistics.
    model.route = "aac"
    got = _loss(bn, model, _x(32)).item()
    ema = {(n, 0): (bn.ema_mean[i].double().numpy(), bn.ema_var[i].double().numpy()) for i, n in enumerate("abc")}
    assert got == pytest.approx(_hand_loss(model, 1.0, ema, m)[0], rel=1e-5)


def test_state_without_keys_loads_as_one_call_per_layer() -> None:
    """A buffer saved as plain lists (one entry per layer in order) still loads."""
    model = _randomise(Routed("abc"), seed=9)
    bn = BNStatisticsLoss(model, momentum=0.9)
    _loss(bn, model, _x(40))
    bn.update_momentum()
    state = bn.state_dict()
    old = {"ema_mean": state["ema_mean"], "ema_var": state["ema_var"]}
    clone = BNStatisticsLoss(model, momentum=0.9)
    clone.load_state_dict(old)
    assert clone.ema_keys == [(0, 0), (1, 0), (2, 0)]
    x = _x(41)
    assert _loss(clone, model, x).item() == pytest.approx(_loss(bn, model, x).item(), rel=1e-6)
