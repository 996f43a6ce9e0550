"""No host synchronisation in the inner loops: a synthesis round (or an online generator phase and
draw) and a student step of every method read no tensor value on the host.

On a GPU each `.item()`, `.tolist()`, `.numpy()`, `float(t)`, `int(t)`, `seq[t]` or `if t:` stalls the host until the
device catches up. The CPU has no such stall, so the test counts those calls instead, through a patch
of `torch.Tensor`, and keeps the ones made from the suite's own code (dfkd_bench and methods/); reads
inside torch itself (an optimiser's host-side step counter) are torch's design, not ours.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Iterator

import pytest
import torch

import dfkd_bench
from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import MethodContext, RoundInfo, SyntheticBank
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.label_embeddings import load_label_embeddings
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS

SPEC = get_dataset("digits")
OUR_CODE = (str(Path(dfkd_bench.__file__).resolve().parent), str(Path(dfkd_bench.__file__).resolve().parent.parent / "methods"))
HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")
SMALL = {"synth_batch": "8", "kd_batch": "8", "g_steps": "2", "iterations": "3", "lowres_iterations": "1",
         "noise_dim": "32", "warmup_rounds": "0", "s_steps": "1"}


@contextmanager
def count_host_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every host read of a tensor made from our code while the block runs, as 'name at file:line'."""
    calls: list[str] = []

    def patched(name: str):
        original = getattr(torch.Tensor, name)

        def read(self: torch.Tensor, *args, **kwargs):
            caller = sys._getframe(1).f_code
            if caller.co_filename.startswith(OUR_CODE):
                calls.append(f"{name} at {caller.co_filename}:{sys._getframe(1).f_lineno}")
            return original(self, *args, **kwargs)
        return read

    with monkeypatch.context() as patch:
        for name in HOST_READS:
            patch.setattr(torch.Tensor, name, patched(name))
        yield calls


def test_the_counter_sees_a_host_read(monkeypatch: pytest.MonkeyPatch) -> None:
    from dfkd_bench.engine.evaluate import accuracy  # reads its count once, at the end: one read
    from dfkd_bench.data.split import EvalSplit

    model = create_model("digits_resnet8_slim", SPEC.num_classes)
    split = EvalSplit(torch.zeros(4, 3, 32, 32, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    ctx = _ctx()
    with count_host_reads(monkeypatch) as calls:
        accuracy(model, split, ctx.normalize)
    assert len(calls) == 1 and "evaluate.py" in calls[0]


def _ctx() -> MethodContext:
    torch.manual_seed(0)
    teacher = create_model("digits_resnet8_slim", SPEC.num_classes).eval().requires_grad_(False)
    return MethodContext.create(teacher, create_model("digits_resnet8_slim", SPEC.num_classes), SPEC, 0, None,
                                label_embeddings_loader=lambda: load_label_embeddings("digits").vectors)


def _method(name: str, ctx: MethodContext):
    cls = METHODS.get(name)
    known = {f.name for f in fields(cls.Hparams)}
    hp = resolve_hparams(cls.Hparams, "digits", {k: v for k, v in SMALL.items() if k in known}, name)
    return cls(ctx, hp)


@pytest.mark.parametrize("name", METHODS.names())
def test_a_round_of_every_method_reads_nothing_on_the_host(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx = _ctx()
    method = _method(name, ctx)
    round_info = RoundInfo(index=1, epoch=1, images=8, warmup=False, kd_steps=1, total=3)
    optimizer = torch.optim.SGD(list(ctx.student.parameters()) + method.student_parameters(), lr=0.01, momentum=0.9)
    distiller = Distiller(ctx, method, optimizer, None)
    bank = SyntheticBank(ctx.device)
    online = method.sample_source == "online"
    for _ in range(2):  # the second round runs with every lazily built piece (taps, buffers) in place
        with count_host_reads(monkeypatch) as calls:
            if online:
                method.train_generator(round_info)
                batch = method.draw(8)
                groups = [(batch.images, batch.labels)]
            else:
                batch = method.synthesize(8, round_info)
                bank.add(batch.images, batch.labels)
                groups = bank.sample(8, ctx.generator, size=method.feed_size)
            loss = distiller.step(groups, 8)
        assert calls == [], f"{name}: host reads in a round: {calls}"
    assert torch.isfinite(loss)
