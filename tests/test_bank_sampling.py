"""SyntheticBank.sample without host reads: the single-resolution stream is the one it always was,
the multi-resolution split is multinomial in the stored counts, labels stay with their images."""

from __future__ import annotations

import io
from typing import Iterator

import pytest
import torch

from dfkd_bench.engine import SyntheticBank

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@pytest.fixture
def host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every Python-level read of a tensor's value to the host, by name, while the test runs."""
    calls: list[str] = []
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self: torch.Tensor, *args: object, _name: str = name, _original=original, **kwargs: object):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    yield calls


def _bank(sizes: dict[int, int]) -> SyntheticBank:
    """Per resolution `res`, `n` constant images; image i of resolution r has label 1000*r + i and
    pixel value (i % 200) / 255, so a drawn image can be checked against its label."""
    bank = SyntheticBank("cpu")
    for res, n in sizes.items():
        i = torch.arange(n)
        x = ((i % 200).float() / 255).view(-1, 1, 1, 1).expand(-1, 3, res, res).contiguous()
        bank.add(x, 1000 * res + i)
    return bank


def check_aligned(x: torch.Tensor, y: torch.Tensor, res: int) -> None:
    assert x.shape[-1] == res and x.shape[0] == y.shape[0]
    assert bool(((y // 1000) == res).all())
    assert torch.allclose(x.flatten(1).mean(1), ((y % 1000) % 200).float() / 255, atol=1e-6)


def test_single_resolution_sample_is_the_old_stream() -> None:
    bank = _bank({32: 37})
    g, ref = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    for batch in (1, 16, 100):
        (x, y), = bank.sample(batch, g)
        picks = torch.randint(0, 37, (batch,), generator=ref)  # what sample always drew
        assert torch.equal(y, bank.labels(32)[picks])
        assert torch.equal(x, bank.images(32)[picks].float() / 255)
        check_aligned(x, y, 32)
    assert torch.equal(g.get_state(), ref.get_state())


def test_multi_resolution_split_is_proportional_and_labels_aligned() -> None:
    sizes = {16: 300, 24: 100, 32: 600}
    total = sum(sizes.values())
    bank = _bank(sizes)
    g = torch.Generator().manual_seed(11)
    batch, steps = 64, 400
    drawn = {r: 0 for r in sizes}
    for _ in range(steps):
        groups = bank.sample(batch, g)
        assert sum(y.shape[0] for _, y in groups) == batch
        assert [x.shape[-1] for x, _ in groups] == sorted(x.shape[-1] for x, _ in groups)
        for x, y in groups:
            res = x.shape[-1]
            check_aligned(x, y, res)
            drawn[res] += y.shape[0]
    n = batch * steps
    for res, size in sizes.items():
        p = size / total
        sd = (n * p * (1 - p)) ** 0.5
        assert abs(drawn[res] - n * p) < 5 * sd, (res, drawn[res], n * p)
    # within a resolution the indices are uniform too: every image of the small group shows up
    seen = torch.cat([y for _ in range(250) for x, y in bank.sample(batch, g) if x.shape[-1] == 24])
    assert seen.unique().numel() == sizes[24]


def test_multi_resolution_sample_with_size_merges_aligned() -> None:
    bank = _bank({16: 10, 32: 30})
    (x, y), = bank.sample(200, torch.Generator().manual_seed(2), size=24)
    assert x.shape == (200, 3, 24, 24) and y.shape == (200,)
    assert set((y // 1000).tolist()) == {16, 32}
    assert torch.allclose(x.flatten(1).mean(1), ((y % 1000) % 200).float() / 255, atol=1e-6)


def test_sample_makes_no_host_reads(host_reads: list[str]) -> None:
    for sizes in ({16: 20}, {16: 20, 32: 5}, {8: 3, 16: 20, 32: 5}):
        bank = _bank(sizes)
        g = torch.Generator().manual_seed(0)
        host_reads.clear()
        for _ in range(5):
            bank.sample(32, g)
            bank.sample(32, g, size=16)
        assert host_reads == [], (sizes, host_reads)


def test_multi_resolution_stream_is_reproducible_and_survives_a_checkpoint() -> None:
    sizes = {16: 50, 32: 20}
    a, b = _bank(sizes), _bank(sizes)
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        for (xa, ya), (xb, yb) in zip(a.sample(40, ga), b.sample(40, gb), strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    # resume mid-stream: the split RNG travels in the state dict, the generator state with the run
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    restored = SyntheticBank("cpu")
    restored.load_state_dict(torch.load(buffer, weights_only=False))
    gr = torch.Generator()
    gr.set_state(ga.get_state())
    for _ in range(3):
        for (xa, ya), (xr, yr) in zip(a.sample(40, ga), restored.sample(40, gr), strict=True):
            assert torch.equal(xa, xr) and torch.equal(ya, yr)
