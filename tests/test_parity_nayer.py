"""NAYER against tmtuan1307/NAYER: two rounds of two generator steps (each weighted loss term and the
gradient norm over the generator and its noisy layers) and two student steps (their KD losses), on the
shared weights and inputs of tests/parity/nayer.pt, equal to the reference's to 1e-4 relative.

The reference numbers come from running tmtuan1307/NAYER at commit c6bedcd49ad7362ff3dc5697202d97e303919a05
on the CPU, with the file's weights loaded into its own modules (`datafree.models.generator.NLGenerator`
with the file's label embeddings, le_size 8, le_emb_size 16, nl 10, sbz 20; the teacher and student into
`resnet_tiny.resnet8`): `NAYER(..., g_steps=2, warmup=0, bn_mmt=0.9, g_loops=1, g_life=50)`
(datafree/synthesis/nayer.py), its augmentation replaced by the normaliser alone, `synthesize()` called
twice. Its `reinit` (line 155, which re-draws the whole generator in the first round) returned the
file's generator, and `re_init_le` (line 170; generator.py line 52) loaded the file's noisy layers of the
round instead of drawing N(0, 1). Per step, bn*loss_bn, oh*loss_oh, adv*loss_adv (lines 192-204), the
targets, and the global norm of the generator's .grad (noisy layers included: its Adam trains them, line
180) were read from its frame at `optimizer.step()`, line 219. The generator was reset in place to the
file's weights before each round, so the second round starts from the same weights with a non-empty
BN-momentum buffer (`update_mmt`, lines 221-223); see tests/test_parity_fast.py for why rounds are not
chained. Then `datafree_kd.train()` (datafree_kd.py lines 442-472) with kd_steps 2 on the file's batch,
SGD lr 0.2, momentum 0.9, weight decay 1e-4, KLDiv at T 20.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.methods.nayer import Nayer
from dfkd_bench.schedule import RoundInfo
from parity.recorder import StepRecorder, flattened, parity_context, student_losses

SHARED = Path(__file__).parent / "parity" / "nayer.pt"

# Printed by the reference harness (NAYER@c6bedcd, see the module docstring), weighted as the script
# weighs them (adv 1.33, bn 10, oh 0.5). Its targets were [0..9, 0..9] in every step.
REFERENCE_ROUNDS = [
    [{"bn": 9.084864854812622, "oh": 1.365014672279358, "adv": -2.6076977515220645, "grad_norm": 489.1440734863281},
     {"bn": 100.95160484313965, "oh": 1.291139006614685, "adv": -0.4318639189004898, "grad_norm": 481.9349365234375}],
    [{"bn": 90.76814651489258, "oh": 1.3007757663726807, "adv": -1.5209324908256532, "grad_norm": 128.1410675048828},
     {"bn": 71.13157272338867, "oh": 1.8729336261749268, "adv": -3.067094464302063, "grad_norm": 177.17062377929688}],
]
REFERENCE_LABELS = list(range(10)) * 2
REFERENCE_KD = [188.1365203857422, 2843.0810546875]  # the second after one SGD step on the same batch


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return torch.load(SHARED, weights_only=False)


def built(shared: dict[str, Any], method: type[Nayer] = Nayer, **overrides: Any) -> Nayer:
    """NAYER (or a subclass) with its `--protocol paper` CIFAR-100 hparams at the file's sizes, on the file's
    models, label embeddings and generator; augmentation off, no generator reset, and each round's noisy
    layers the file's (drawn first, as ours are, then overwritten)."""
    hp = shared["hparams"]
    sizes = {k: hp[k] for k in ("ngf", "noise_dim", "synth_batch", "g_steps")}
    values = dict(sizes, generator="cifar", g_life=0, synth_augment=False, kd_aug="none", **overrides)
    built = method(parity_context(shared, (shared["resolution"],)),
                   resolve_hparams(method.Hparams, "cifar100", values, method.name, protocol="paper"))
    built.generator.load_state_dict(shared["generator"])
    return built


def run_rounds(method: Nayer, shared: dict[str, Any]) -> tuple[list[list[dict[str, float]]], list[list[int]]]:
    """The harness's rounds on our method: per round, each step's terms and gradient norm, and its labels."""
    recorder = StepRecorder(method, {"grad_norm": ("generator",)})
    rounds, labels = [], []
    draw = method.generator.reset_noise
    for index, noise in enumerate(shared["noise_weight"]):
        method.generator.load_state_dict(shared["generator"])  # as the harness: each round from the file's weights

        def file_noise(rng: torch.Generator, noise: torch.Tensor = noise) -> None:
            draw(rng)
            with torch.no_grad():
                method.generator.noise_weight.copy_(noise)

        method.generator.reset_noise = file_noise  # type: ignore[method-assign]
        batch = method.synthesize(shared["hparams"]["synth_batch"], RoundInfo.standalone(index=index))
        rounds.append(recorder.take())
        labels.append(batch.labels.tolist())
    return rounds, labels


def test_paper_preset_is_the_script(shared: dict[str, Any]) -> None:
    hp = resolve_hparams(Nayer.Hparams, "cifar100", {}, "nayer", protocol="paper")
    script = {k: getattr(hp, k) for k in ("lr_g", "adv", "bn", "oh", "bn_momentum", "temperature", "lr",
                                          "weight_decay")}
    assert script == {k: shared["hparams"][k] for k in script}
    assert (tuple(hp.g_betas), hp.noisy_chunk, hp.keep_best) == ((0.5, 0.999), 0, True)


def test_rounds_and_student_steps_equal_nayers(shared: dict[str, Any]) -> None:
    method = built(shared)
    rounds, labels = run_rounds(method, shared)
    assert flattened(rounds) == pytest.approx(flattened(REFERENCE_ROUNDS), rel=1e-4)
    assert labels == [REFERENCE_LABELS] * len(REFERENCE_ROUNDS)
    assert student_losses(method, shared) == pytest.approx(REFERENCE_KD, rel=1e-4)
