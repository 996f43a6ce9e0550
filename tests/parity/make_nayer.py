"""Writes tests/parity/nayer.pt: the shared weights and inputs of NAYER's (and MUSE's) reference-parity tests.

The ResNet-8 teacher and student of make_fast.py (calibrated on this generator's images), NAYER's CIFAR
generator at a tiny width, tiny label embeddings (10 classes x 8), the noisy layers of each round (the
reference re-draws them with N(0, 1): both sides load these instead), and one uint8 student batch.
Deterministic. Usage: `python tests/parity/make_nayer.py`.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from dfkd_bench.data import get_dataset
from dfkd_bench.engine import balanced_labels
from dfkd_bench.methods.nayer import NoisyLabelGenerator

from make_fast import DATASET, HERE, RESOLUTION, common_inputs

# tmtuan1307/NAYER scripts/nayer_200.sh (CIFAR): --lr_g 4e-3 --adv 1.33 --bn 10.0 --oh 0.5 --lr 0.2; datafree_kd.py
# defaults --bn_mmt 0.9 --T 20 --wd 1e-4. Widths, the embedding size, batches and rounds are ours (tiny).
HPARAMS: dict[str, Any] = dict(g_steps=2, lr_g=4e-3, adv=1.33, bn=10.0, oh=0.5, bn_momentum=0.9, temperature=20.0,
                               lr=0.2, weight_decay=1e-4, ngf=8, noise_dim=16, embed_dim=8, synth_batch=20, rounds=2)


def build() -> dict[str, Any]:
    """Everything the NAYER/MUSE parity tests and the NAYER reference harness load."""
    hp, spec = HPARAMS, get_dataset(DATASET)
    classes = spec.num_classes
    torch.manual_seed(4)
    generator = NoisyLabelGenerator(hp["embed_dim"], hp["noise_dim"], hp["ngf"], (RESOLUTION,), spec.in_chans,
                                    chunk=classes, max_batch=hp["synth_batch"])
    state = copy.deepcopy(generator.state_dict())  # before the calibration forwards move its BN statistics
    rng = torch.Generator().manual_seed(5)
    embeddings = torch.randn(classes, hp["embed_dim"], generator=rng)
    labels = balanced_labels(hp["synth_batch"], classes)
    noise = torch.randn(hp["rounds"], *generator.noise_weight.shape, generator=rng)
    with torch.no_grad():
        calibration = []
        for _ in range(3):
            generator.reset_noise(rng)
            calibration.append(generator(embeddings[labels], RESOLUTION))
    data = common_inputs(torch.cat(calibration), seed=6, kd_batch=16)
    return dict(data, hparams=hp, generator=state, embeddings=embeddings, noise_weight=noise)


if __name__ == "__main__":
    torch.save(build(), HERE / "nayer.pt")
    print(f"wrote {HERE / 'nayer.pt'}")
