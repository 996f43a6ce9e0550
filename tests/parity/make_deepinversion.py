"""Writes tests/parity/deepinversion.pt: the shared weights and inputs of DeepInversion's reference-parity test.

Fast's CIFAR-style ResNet-8 teacher and student (make_fast.common_inputs), calibrated on images of the
pixel noise DeepInversion starts from, that noise itself (N(0, 1) in normalised space, drawn by
`torch.randn` right after `torch.manual_seed(pixel_seed)`, as the reference draws it), sorted labels
and one uint8 batch for the student steps. Deterministic. Usage: `python tests/parity/make_deepinversion.py`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_fast import DATASET, RESOLUTION, common_inputs  # noqa: E402

from dfkd_bench.data import get_dataset  # noqa: E402

HERE = Path(__file__).resolve().parent
# zju-vipa/Fast-Datafree scripts/deepinv_cifar.sh: --lr_g 0.1 --adv 1 --bn 10 --oh 1 --T 20 --lr 0.1, with
# datafree_kd.py's tv 0.0, l2 0.0 and weight decay 1e-4; the batch is ours (tiny). The priors case turns on
# DataFree's tv 0.001 and an l2 weight (0 in the script) to pin those terms too.
HPARAMS: dict[str, Any] = dict(lr_x=0.1, adi=1.0, r_feature=10.0, ce=1.0, student_bn=1e-3, temperature=20.0,
                               lr=0.1, weight_decay=1e-4, synth_batch=16)
PRIORS: dict[str, Any] = dict(tv_l1=1e-3, l2=1e-2)
PIXEL_SEED = 4


def build() -> dict[str, Any]:
    """Everything the DeepInversion parity test and its reference harness load."""
    spec = get_dataset(DATASET)
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    rng = torch.Generator().manual_seed(3)
    calibration = torch.randn(64, spec.in_chans, RESOLUTION, RESOLUTION, generator=rng) * std + mean
    data = common_inputs(calibration, seed=0, kd_batch=16)
    torch.manual_seed(PIXEL_SEED)
    pixels = torch.randn(HPARAMS["synth_batch"], spec.in_chans, RESOLUTION, RESOLUTION)
    labels = torch.randint(0, spec.num_classes, (HPARAMS["synth_batch"],), generator=rng).sort().values
    return dict(data, hparams=HPARAMS, priors=PRIORS, pixel_seed=PIXEL_SEED, pixels=pixels, labels=labels)


if __name__ == "__main__":
    torch.save(build(), HERE / "deepinversion.pt")
    print(f"wrote {HERE / 'deepinversion.pt'}")
