"""Fast against zju-vipa/Fast-Datafree: two meta rounds of two generator steps (each weighted loss term,
the clone's and the latent's gradient norms, the MAML meta-gradient and the meta step) and two student
steps (their KD losses), on the shared weights and inputs of tests/parity/fast.pt, equal to the
reference's to 1e-4 relative.

The reference numbers come from running zju-vipa/Fast-Datafree at commit
0dcecbc178b87048bedf730acb577045b3c0b57a on the CPU, with the file's weights loaded into its own modules
(`datafree.models.generator.Generator`; the teacher and student into `resnet_tiny.resnet8`, the same layers
as our zoo's `resnet8`): `FastMetaSynthesizer(..., iterations=2, warmup=0, bn_mmt=0.9, is_maml=1)`
(datafree/synthesis/fast_meta.py), its augmentation replaced by the normaliser alone, `synthesize(targets)`
called twice with the file's sorted labels and its `torch.randn` returning the file's latent. Per step,
bn*loss_bn, oh*loss_oh, adv*loss_adv (lines 142-150) and the latent's gradient were read from its frame at
line 160, after `loss.backward()`; the clone's gradient norm where `fomaml_grad` is called (line 162); the
meta-gradient (the meta-generator's .grad, summed by `fomaml_grad`, lines 23-27) and the meta step's size
after the call. The meta-generator was reset in place to the file's weights before each round, so the
second round starts from the same weights with a non-empty BN-momentum buffer (hooks.py
`DeepInversionHook`, `update_mmt` at fast_meta.py line 167-169) and the meta-Adam state of the first.
(Chained rounds would also compare the meta step's effect, but Adam's first step moves each weight by
about +-lr whatever its gradient's size, so a weight whose meta-gradient is float noise lands on
either side, as it does between two runs of the reference on different hardware.) Then
`datafree_kd.train()` (datafree_kd.py lines 408-437) with kd_steps 2 on the file's batch, SGD lr 0.2,
momentum 0.9, weight decay 1e-4, KLDiv at T 20.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import RoundInfo
from dfkd_bench.methods.fast import Fast
from parity.recorder import StepRecorder, flattened, global_norm, parity_context, student_losses

SHARED = Path(__file__).parent / "parity" / "fast.pt"

# Printed by the reference harness (Fast-Datafree@0dcecbc, see the module docstring), weighted as the
# script weighs them (adv 1.33, bn 10, oh 0.5).
REFERENCE_ROUNDS = [
    {"steps": [{"bn": 8.270303010940552, "oh": 1.2272980213165283, "adv": -1.4643881225585937,
                "grad_norm": 207.06610107421875, "latent_grad_norm": 2.45422101020813},
               {"bn": 136.788330078125, "oh": 1.4948583841323853, "adv": -0.6562654522061349,
                "grad_norm": 1437.232666015625, "latent_grad_norm": 7.2844109535217285}],
     "meta_grad_norm": 1304.1932373046875, "meta_step_norm": 1.4547545909881592},
    {"steps": [{"bn": 122.64497756958008, "oh": 1.1926684379577637, "adv": -1.3340100049972534,
                "grad_norm": 100.46839141845703, "latent_grad_norm": 1.9151333570480347},
               {"bn": 115.62023162841797, "oh": 1.2582223415374756, "adv": -3.099263925552368,
                "grad_norm": 101.3095932006836, "latent_grad_norm": 1.9525362253189087}],
     "meta_grad_norm": 167.2105712890625, "meta_step_norm": 0.9226081371307373},
]
REFERENCE_KD = [15.397588729858398, 2321.896240234375]  # the second after one SGD step on the same batch


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return torch.load(SHARED, weights_only=False)


def built(shared: dict[str, Any]) -> Fast:
    """Fast with its `--protocol paper` CIFAR-100 hparams, the file's sizes and the Fast-2 script line's
    step count and learning rates, on the file's models and generator; augmentation off."""
    hp = shared["hparams"]
    overrides = {k: hp[k] for k in ("nz", "ngf", "synth_batch", "g_steps", "lr_g", "lr_z")}
    method = Fast(parity_context(shared), resolve_hparams(
        Fast.Hparams, "cifar100", dict(overrides, generator="cifar", synth_augment=False, kd_aug="none"), "fast",
        protocol="paper"))
    method.generator.load_state_dict(shared["generator"])
    return method


def test_paper_preset_is_the_script(shared: dict[str, Any]) -> None:
    hp = resolve_hparams(Fast.Hparams, "cifar100", {}, "fast", protocol="paper")
    script = {k: getattr(hp, k) for k in ("adv", "bn", "oh", "bn_momentum", "temperature", "lr", "weight_decay")}
    assert script == {k: shared["hparams"][k] for k in script}
    assert (hp.meta, hp.lr_g_meta, tuple(hp.g_betas), hp.keep_best, hp.persistent_z) == \
        ("maml", 0.0, (0.5, 0.999), True, False)


def test_meta_rounds_and_student_steps_equal_fast_datafrees(shared: dict[str, Any]) -> None:
    method = built(shared)
    recorder = StepRecorder(method, {"grad_norm": ("generator",), "latent_grad_norm": ("latent",)})
    rounds = []
    for index in range(len(REFERENCE_ROUNDS)):
        method.generator.load_state_dict(shared["generator"])  # as the harness: each round from the file's weights
        labels, latent = shared["labels"][index], shared["latents"][index]
        method.round_labels = lambda n, y=labels: y.clone()  # type: ignore[method-assign]
        method.round_latent = lambda _, z=latent: z.clone().requires_grad_(True)  # type: ignore[method-assign]
        before = [p.detach().clone() for p in method.generator.parameters()]
        method.synthesize(shared["hparams"]["synth_batch"], RoundInfo.standalone(index=index))
        params = list(method.generator.parameters())
        rounds.append({"steps": recorder.take(), "meta_grad_norm": global_norm([p.grad for p in params]),
                       "meta_step_norm": global_norm([p.detach() - b for p, b in zip(params, before)])})
    assert flattened(rounds) == pytest.approx(flattened(REFERENCE_ROUNDS), rel=1e-4)
    assert student_losses(method, shared) == pytest.approx(REFERENCE_KD, rel=1e-4)
