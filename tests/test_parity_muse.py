"""MUSE has no public code. What it shares with NAYER (all of it with cam = ed = aed = 0) must equal NAYER's
reference on tests/parity/nayer.pt (the numbers of tests/test_parity_nayer.py); its own terms (L_cam,
L_aed in the generator loss, L_ed in the student's) equal a plain-torch computation of their definitions
(methods/muse.py, `Muse`) on four 16 px images, written here without the suite's code, to 1e-4 relative.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from dfkd_bench.config import resolve_hparams
from dfkd_bench.engine import GeneratorStep
from dfkd_bench.methods.muse import Muse
from dfkd_bench.schedule import RoundInfo
from parity.recorder import flattened, parity_context, student_losses
from test_parity_nayer import REFERENCE_KD, REFERENCE_LABELS, REFERENCE_ROUNDS, built, run_rounds

SHARED = Path(__file__).parent / "parity" / "nayer.pt"
GENERATED, FED = 16, 32  # MUSE's default: generate at half the teacher's size, upsample to it


@pytest.fixture(scope="module")
def shared() -> dict[str, Any]:
    return torch.load(SHARED, weights_only=False)


def test_nayer_part_equals_nayers_reference(shared: dict[str, Any]) -> None:
    method = built(shared, Muse, cam=0.0, ed=0.0, aed=0.0)
    rounds, labels = run_rounds(method, shared)
    assert flattened(rounds) == pytest.approx(flattened(REFERENCE_ROUNDS), rel=1e-4)
    assert labels == [REFERENCE_LABELS] * len(REFERENCE_ROUNDS)
    assert student_losses(method, shared) == pytest.approx(REFERENCE_KD, rel=1e-4)


def tiny_muse(shared: dict[str, Any]) -> tuple[Muse, torch.Tensor, torch.Tensor]:
    """MUSE (paper CIFAR-100 hparams: cam 0.5, ed 1, aed 0.5, the mean fill) generating at 16 px and fed at
    32, after warm-up; four 16 px images (every other pixel of the file's batch) and their labels."""
    method = Muse(parity_context(shared, (GENERATED,)), resolve_hparams(
        Muse.Hparams, "cifar100", dict(ngf=8, noise_dim=16, synth_batch=4, synth_augment=False, kd_aug="none"),
        "muse", protocol="paper"))
    method.round = RoundInfo.standalone()
    images = shared["kd_images"][:4, :, ::2, ::2].float() / 255
    return method, images, shared["kd_labels"][:4]


def by_hand(method: Muse, images: torch.Tensor, labels: torch.Tensor) -> dict[str, torch.Tensor]:
    """The definitions, in plain torch: the teacher fed the bilinear upsampling to 32 px, normalised; CAM_y
    = ReLU(sum_k w[y,k] A_k) over the last conv map, over its per-image max, resized to 16 px;
    L_cam = CE(T(m + CAM (x - m)), y); L_aed = mean cos(P(S_eval(x)), f_y); L_ed = mean(1 - cos(P(S_train(x)), f_y))."""
    ctx, hp = method.ctx, method.hp
    mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in (ctx.spec.mean, ctx.spec.std))

    def fed(x: torch.Tensor) -> torch.Tensor:
        return (F.interpolate(x, size=(FED, FED), mode="bilinear", align_corners=False) - mean) / std

    def penultimate(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        conv = model.stages(model.stem(fed(x)))
        return conv, conv.mean(dim=(2, 3))

    teacher, student, embeddings = ctx.teacher, ctx.student, ctx.label_embeddings()
    with torch.no_grad():
        conv, _ = penultimate(teacher, images)
        raw = (teacher.classifier.weight[labels][:, :, None, None] * conv).sum(1, keepdim=True)
        assert (raw.clamp_min(0).amax(dim=(2, 3)) > hp.cam_min_peak * raw.abs().amax(dim=(2, 3))).all()
        cam = raw.clamp_min(0) / raw.clamp_min(0).amax(dim=(2, 3), keepdim=True)
        cam = F.interpolate(cam, size=(GENERATED, GENERATED), mode="bilinear", align_corners=False)
        blended = mean + cam * (images - mean)
        cam_ce = F.cross_entropy(teacher.classifier(penultimate(teacher, blended)[1]), labels)
        student.eval()
        aed = F.cosine_similarity(method.projection(penultimate(student, images)[1]), embeddings[labels]).mean()
        training = copy.deepcopy(student).train()  # a train-mode forward moves the BN statistics: on a copy
        ed = 1 - F.cosine_similarity(method.projection(penultimate(training, images)[1]), embeddings[labels]).mean()
    return {"cam": hp.cam * cam_ce, "aed": hp.aed * aed, "ed": hp.ed * ed}


def test_own_terms_equal_their_definitions(shared: dict[str, Any]) -> None:
    method, images, labels = tiny_muse(shared)
    expected = by_hand(method, images, labels)
    terms = method.generator_terms(GeneratorStep(images, labels))
    assert {k: float(terms[k].detach()) for k in ("cam", "aed")} == \
        pytest.approx({k: float(expected[k]) for k in ("cam", "aed")}, rel=1e-4)
    student_losses(method, dict(shared, kd_images=(images * 255).round().to(torch.uint8), kd_labels=labels), steps=1)
    assert float(method.loss_terms["kd/ed"]) == pytest.approx(float(expected["ed"]), rel=1e-4)
