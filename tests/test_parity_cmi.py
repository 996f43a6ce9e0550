"""CMI against zju-vipa/DataFree: one synthesis step (each weighted loss term, the generator's and the
head's gradient norms) and two student steps on one batch (their losses), on the shared weights and
inputs of tests/parity/cmi.pt, equal to the reference's to 1e-4 relative.

The reference numbers come from running zju-vipa/DataFree (the CMI authors' code; zju-vipa/CMI is the same
tree) at commit 9e79fa9e2328205f26dbdb226878f3a28f3bf4cc on the CPU, with the file's weights loaded into its
own modules (`generator.Generator`, `contrastive.MLPHead`; the file's `TinyNet` teacher and student):
`CMISynthesizer.synthesize(targets)` with iterations 1 (datafree/synthesis/contrastive.py lines 261-338:
loss_bn, loss_oh, loss_adv and loss_cr read from its frame before `optimizer.step()`, line 337, with the
gradient norms of the generator's and the head's .grad there), `reset_model` (line 274) made a no-op so
the file's generator is used, z drawn by `torch.randn` after `torch.manual_seed(latent_seed)` (it equals
the file's latent), the memory bank holding the file's 16 rows (`MemoryBank.add`), and its augmentation
replaced by identity for the global view and a mirror for the local view (line 279). Then
`datafree_kd.train()` with kd_steps 2 on the file's batch (datafree_kd.py lines 369-393), SGD lr 0.1,
momentum 0.9, weight decay 1e-4 (line 287), KLDiv at T 20 (line 239).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pytest
import torch

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import MethodContext, RoundInfo
from dfkd_bench.engine.distill import Distiller
from dfkd_bench.methods.cmi import Cmi
from parity.make_cmi import TinyNet

SHARED = Path(__file__).parent / "parity" / "cmi.pt"

# Printed by the reference harness (DataFree@9e79fa9, see the module docstring), weighted as the
# from-scratch script weighs them (bn 1, oh 1, adv 0.5, cr 0.8).
REFERENCE_TERMS = {"bn": 1.0 * 0.06734025478363037, "oh": 1.0 * 2.3084046840667725, "adv": 0.5 * -2.07328200340271,
                   "cr": 0.8 * 6.803643226623535}
REFERENCE_LOSS = 6.782018184661865
REFERENCE_GENERATOR_GRAD, REFERENCE_HEAD_GRAD = 130.15189915306664, 0.7315432930640544
REFERENCE_KD = (194.19143676757812, 57330.51171875)  # the second after one SGD step on the same batch


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return torch.load(SHARED, weights_only=False)


def built(shared: dict[str, Any]) -> Cmi:
    """CMI with its `--protocol paper` CIFAR-10 hparams at the file's tiny sizes, on the file's models,
    generator, head and bank; the round keeps the file's generator, latent and labels, synthesis
    augmentation is off and the local view is the mirror image (the harness's views)."""
    spec = get_dataset("cifar10")
    teacher, student = TinyNet(spec.num_classes), TinyNet(spec.num_classes)
    teacher.load_state_dict(shared["teacher"])
    student.load_state_dict(shared["student"])
    teacher.eval().requires_grad_(False)
    ctx = MethodContext.create(teacher, student, spec, seed=0, device="cpu", amp="off")
    hp = shared["hparams"]
    sizes = {k: hp[k] for k in ("nz", "ngf", "head_dim", "synth_batch", "bank_size", "n_neg", "cr_layers")}
    method = Cmi(ctx, resolve_hparams(Cmi.Hparams, "cifar10", dict(sizes, g_steps=1, synth_augment=False,
                                                                      kd_aug="none", kd_batch=16),
                                      "cmi", protocol="paper"))
    method.generator.load_state_dict(shared["generator"])
    method.head.load_state_dict(shared["head"])
    method.bank.add(shared["bank"])
    method.start_round = lambda round: None  # keep the file's generator (the reference's reset_model skipped)
    method.round_labels = lambda n: shared["labels"].clone()
    method.round_latent = lambda labels: shared["latent"].clone().requires_grad_(True)
    method.local_view = lambda images: images.flip(3)
    return method


def test_paper_preset_is_the_scratch_scripts(shared: dict[str, Any]) -> None:
    hp = resolve_hparams(Cmi.Hparams, "cifar10", {}, "cmi", protocol="paper")
    script = {k: getattr(hp, k) for k in ("bn", "oh", "adv", "cr", "cr_T", "temperature", "lr", "weight_decay")}
    assert script == {k: shared["hparams"][k] for k in script}
    assert (hp.g_steps, hp.lr_g, hp.synth_batch, hp.kd_batch, tuple(hp.g_betas), hp.lr_min_ratio) == \
        (200, 1e-3, 256, 128, (0.5, 0.999), 0.0)


def test_terms_gradients_and_student_losses_equal_datafrees(shared: dict[str, Any]) -> None:
    method = built(shared)
    norms: list[tuple[float, float]] = []
    apply = method.apply_gradients

    def keep_norms(groups: dict[str, Any], grads: dict[str, Sequence[torch.Tensor | None]], optimizer: Any) -> None:
        def norm(gs: Sequence[torch.Tensor | None]) -> float:
            return float(torch.sqrt(sum((g.double() ** 2).sum() for g in gs if g is not None)))

        norms.append((norm(grads["generator"]), norm(grads["head"])))
        apply(groups, grads, optimizer)

    method.apply_gradients = keep_norms
    method.synthesize(shared["hparams"]["synth_batch"], RoundInfo.standalone())
    terms = {k.split("/", 1)[1]: float(v) for k, v in method.loss_terms.items() if k.startswith("synth/")}
    assert terms == pytest.approx(REFERENCE_TERMS, rel=1e-4)
    assert sum(terms.values()) == pytest.approx(REFERENCE_LOSS, rel=1e-4)
    assert norms == [pytest.approx((REFERENCE_GENERATOR_GRAD, REFERENCE_HEAD_GRAD), rel=1e-4)]

    hp = method.hp
    optimizer = torch.optim.SGD(method.ctx.student.parameters(), lr=hp.lr, momentum=hp.momentum,
                                weight_decay=hp.weight_decay)
    distiller = Distiller(method.ctx, method, optimizer, None)
    batch = (shared["kd_images"].float() / 255, torch.zeros(16, dtype=torch.long))
    losses = [float(distiller.step([batch], 16)) for _ in range(2)]
    assert losses == pytest.approx(REFERENCE_KD, rel=1e-4)
