"""Writes tests/parity/datafree_online.pt: the shared weights and inputs of the DAFL, DFQ, ZSKT and DFAD
reference-parity tests (zju-vipa/DataFree's `GenerativeSynthesizer` and `datafree_kd.train`).

A CIFAR-style ResNet-8 teacher and student (our zoo's `resnet8`, the layers of the reference's
`resnet_tiny.resnet8`; made as for Fast's test), DataFree's `LargeGenerator` layout (our
`LatentGenerator` at stem 4) at a tiny width, the latent of one generator step and the latent of one
student batch. Each method starts from the same generator. Deterministic: run it again and the tensors
are equal. Usage: `python tests/parity/make_datafree_online.py`.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_fast import RESOLUTION, common_inputs  # noqa: E402

from dfkd_bench.data import get_dataset  # noqa: E402
from dfkd_bench.engine import LatentGenerator  # noqa: E402

HERE = Path(__file__).resolve().parent
# The loss weights of zju-vipa/DataFree's scripts (commit 9e79fa9; DFAD's script at acbbea6), with
# datafree_kd.py's criteria (~259: KL at T 1, L1 for DFAD) and kd_steps per generator step; widths,
# latent size and batch are ours (tiny).
METHODS: dict[str, dict[str, Any]] = {
    "dafl": dict(oh=1.0, act=0.001, balance=20.0, bn=0.0, adv=0.0, kd_steps=5),
    "dfq": dict(oh=1.0, act=0.0, balance=20.0, bn=1.0, adv=1.0, kd_steps=10),
    "zskt": dict(oh=0.0, act=0.0, balance=0.0, bn=0.0, adv=1.0, kd_steps=5),
    "dfad": dict(oh=0.0, act=0.0, balance=0.0, bn=0.0, adv=1.0, kd_steps=5),
}
NZ, NGF, STEM, BATCH = 16, 8, 4, 16


def build() -> dict[str, Any]:
    """Everything the four parity tests and their reference harness load."""
    spec = get_dataset("cifar10")
    torch.manual_seed(4)
    generator = LatentGenerator(NZ, NGF, RESOLUTION, spec.in_chans, stem=STEM)
    state = copy.deepcopy(generator.state_dict())  # before the calibration forward moves its BN statistics
    rng = torch.Generator().manual_seed(5)
    with torch.no_grad():
        data = common_inputs(generator(torch.randn(64, NZ, generator=rng)), seed=0, kd_batch=BATCH)
    return dict(data, methods=METHODS, nz=NZ, ngf=NGF, stem=STEM, batch=BATCH, generator=state,
                z_generator=torch.randn(BATCH, NZ, generator=rng), z_sample=torch.randn(BATCH, NZ, generator=rng))


if __name__ == "__main__":
    torch.save(build(), HERE / "datafree_online.pt")
    print(f"wrote {HERE / 'datafree_online.pt'}")
