"""SyntheticBank's host tier: past its device budget the bank moves to host memory, loses nothing,
samples the same images from a CPU generator, and survives a checkpoint; plus bank_gpu_budget."""

from __future__ import annotations

import io
import math

import pytest
import torch

from dfkd_bench.engine import SyntheticBank
from dfkd_bench.engine.bank import GIB, bank_gpu_budget, to_uint8
import test_bank_sampling as sampling

host_reads = sampling.host_reads  # the fixture, shared

CHANNELS = 3


class _DeviceGenerator:
    """Stands in for a CUDA generator: all the host tier reads from one is its device and its seed."""

    device = torch.device("cuda")

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def initial_seed(self) -> int:
        return self.seed


def _batch(res: int, n: int, first: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` constant images of resolution `res`, labelled 1000*res + i for i from `first`, with pixel
    value (i % 200) / 255 (what `test_bank_sampling.check_aligned` checks)."""
    i = torch.arange(first, first + n)
    x = ((i % 200).float() / 255).view(-1, 1, 1, 1).expand(-1, CHANNELS, res, res).contiguous()
    return x, 1000 * res + i


def _fill(bank: SyntheticBank, sizes: dict[int, int], batch: int = 4) -> dict[int, list[torch.Tensor]]:
    """Add `sizes[res]` images per resolution in batches, resolutions interleaved; returns the uint8
    images added per resolution, in order."""
    added: dict[int, list[torch.Tensor]] = {res: [] for res in sizes}
    for first in range(0, max(sizes.values()), batch):
        for res, total in sizes.items():
            if first < total:
                x, y = _batch(res, min(batch, total - first), first)
                bank.add(x, y)
                added[res].append(to_uint8(x))
    return added


def _image_bytes(res: int, n: int = 1) -> int:
    return n * CHANNELS * res * res


def _restored(bank: SyntheticBank, budget: int | None) -> SyntheticBank:
    """A new bank with `budget`, loaded from `bank`'s state dict through torch.save."""
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = SyntheticBank("cpu", budget)
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    return restored


def _assert_same_samples(a: SyntheticBank, b: SyntheticBank, ga: object, gb: object,
                         size: int | None = None, draws: int = 4) -> None:
    for _ in range(draws):
        for (xa, ya), (xb, yb) in zip(a.sample(24, ga, size), b.sample(24, gb, size), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_spills_to_the_host_past_its_budget_and_loses_nothing() -> None:
    batch, res = 4, 16
    budget = 3 * _image_bytes(res, batch)
    bank = SyntheticBank("cpu", budget)
    assert bank.tier == "device" and bank.spilled_at is None
    added = []
    for k in range(6):
        x, y = _batch(res, batch, k * batch)
        bank.add(x, y)
        added.append(to_uint8(x))
        assert bank.tier == ("device" if k < 3 else "host")
        if k < 3:
            assert bank.allocated_bytes() <= budget  # growth stops at the budget instead of doubling past it
    assert bank.spilled_at == 3 * batch
    assert bank.storage_device == torch.device("cpu") and bank.images(res).device.type == "cpu"
    assert torch.equal(bank.images(res), torch.cat(added))
    assert torch.equal(bank.labels(res), 1000 * res + torch.arange(6 * batch))
    assert bank.nbytes() == _image_bytes(res, 6 * batch)


def test_spill_moves_every_resolution() -> None:
    sizes = {8: 30, 16: 22, 24: 9}
    budget = _image_bytes(16, 12)
    bank = SyntheticBank("cpu", budget)
    added = _fill(bank, sizes)
    assert bank.tier == "host" and 0 < bank.spilled_at < len(bank)
    for res in sizes:
        assert torch.equal(bank.images(res), torch.cat(added[res]))
        assert torch.equal(bank.labels(res), 1000 * res + torch.arange(sizes[res]))


def test_no_budget_never_spills() -> None:
    bank = SyntheticBank("cpu")
    _fill(bank, {8: 40, 32: 40})
    assert bank.tier == "device" and bank.spilled_at is None


@pytest.mark.parametrize("sizes", [{16: 40}, {8: 30, 16: 50}, {8: 5, 16: 50, 24: 17}])
@pytest.mark.parametrize("size", [None, 12])
@pytest.mark.parametrize("budget", [0, 7_000])
def test_a_spilled_bank_samples_the_same_images(sizes: dict[int, int], size: int | None, budget: int) -> None:
    resident, spilled = SyntheticBank("cpu"), SyntheticBank("cpu", budget)
    _fill(resident, sizes)
    _fill(spilled, sizes)
    assert resident.tier == "device" and spilled.tier == "host"
    ga, gb = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    _assert_same_samples(resident, spilled, ga, gb, size)
    assert torch.equal(ga.get_state(), gb.get_state())
    for x, y in spilled.sample(64, gb):
        sampling.check_aligned(x, y, x.shape[-1])


def test_host_tier_sample_makes_no_host_reads(host_reads: list[str]) -> None:
    for sizes in ({16: 20}, {8: 3, 16: 20, 32: 5}):
        bank = SyntheticBank("cpu", 0)
        _fill(bank, sizes)
        host_reads.clear()
        for g in (torch.Generator().manual_seed(0), _DeviceGenerator(0)):
            bank.sample(32, g)
            bank.sample(32, g, size=16)
        assert host_reads == [], (sizes, host_reads)


def test_a_spilled_bank_resumes_from_its_state_dict() -> None:
    sizes = {8: 30, 16: 50}
    bank = SyntheticBank("cpu", 1_000)
    _fill(bank, sizes)
    g = torch.Generator().manual_seed(4)
    bank.sample(24, g)  # resume mid-stream: the split RNG has been drawn from
    restored = _restored(bank, 1_000)
    assert restored.tier == "host" and restored.spilled_at == bank.spilled_at
    gr = torch.Generator()
    gr.set_state(g.get_state())
    _assert_same_samples(bank, restored, g, gr, size=12)


def test_load_decides_the_tier_from_its_own_budget() -> None:
    sizes = {8: 30, 16: 50}
    spilled = SyntheticBank("cpu", 0)
    _fill(spilled, sizes)
    roomy = _restored(spilled, spilled.nbytes())
    assert roomy.tier == "device" and roomy.spilled_at is None
    resident = SyntheticBank("cpu")
    _fill(resident, sizes)
    tight = _restored(resident, spilled.nbytes() - 1)
    assert tight.tier == "host" and tight.spilled_at == len(resident)
    for res in sizes:
        assert torch.equal(tight.images(res), resident.images(res))
        assert torch.equal(roomy.labels(res), resident.labels(res))


@pytest.mark.parametrize("sizes", [{16: 40}, {8: 30, 16: 50}])
def test_a_device_generator_draws_host_indices_from_the_banks_own_seeded_generator(sizes: dict[int, int]) -> None:
    bank, twin = SyntheticBank("cpu", 0), SyntheticBank("cpu", 0)
    _fill(bank, sizes)
    _fill(twin, sizes)
    assert "host_rng" not in bank.state_dict()
    # the bank's generator is a CPU one seeded from the device generator's seed: a CPU generator with
    # that seed (and the same split seed) draws the same stream
    _assert_same_samples(bank, twin, _DeviceGenerator(21), torch.Generator().manual_seed(21))
    other = SyntheticBank("cpu", 0)
    _fill(other, sizes)
    (xo, _), = other.sample(64, _DeviceGenerator(22), size=8)
    (xb, _), = bank.sample(64, _DeviceGenerator(21), size=8)
    assert not torch.equal(xo, xb)
    # its state travels in the state dict: a resumed bank continues the stream
    restored = _restored(bank, 0)
    assert torch.equal(restored.state_dict()["host_rng"], bank.state_dict()["host_rng"])
    _assert_same_samples(bank, restored, _DeviceGenerator(21), _DeviceGenerator(99), size=12)


def test_bank_gpu_budget_converts_gib_to_bytes() -> None:
    assert bank_gpu_budget(None) is None
    assert bank_gpu_budget(0) == 0
    assert bank_gpu_budget(0.25) == GIB // 4
    assert bank_gpu_budget(1.5) == 3 * GIB // 2
    assert bank_gpu_budget(40) == 40 * 2**30


@pytest.mark.parametrize("gb", [-1.0, -1e-9, math.nan, math.inf, -math.inf])
def test_bank_gpu_budget_rejects_negative_and_non_finite(gb: float) -> None:
    with pytest.raises(ValueError, match="--bank-gpu-gb") as error:
        bank_gpu_budget(gb)
    assert "\n" not in str(error.value)


def test_a_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError):
        SyntheticBank("cpu", -1)
