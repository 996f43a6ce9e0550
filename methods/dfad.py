"""DFAD (Fang et al., "Data-Free Adversarial Distillation", 2019): an online generator that makes
hard samples, those where student and teacher logits differ most, and a student that closes the gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dfkd_bench import UserError, register_method
from dfkd_bench.engine import GeneratorStep, LatentGeneratorMethod, LatentHparams, OnlineGeneratorMethod, OnlineHparams
from dfkd_bench.engine import StudentStep


def logit_discrepancy(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """DFAD's model discrepancy: the mean absolute (L1) difference of the logits, over batch and classes."""
    return F.l1_loss(student_logits.float(), teacher_logits.float())


@dataclass
class DfadHparams(OnlineHparams, LatentHparams):
    """Generator loss = adv * (-L1(s, t)); student loss = L1(s, t) (mean absolute logit difference).

    Before every `s_steps` student steps the generator (Fast's CIFAR `LatentGenerator`, z ~ N(0, 1)
    of `nz`) takes `g_steps` Adam steps (lr_g, betas g_betas) on fresh batches of kd_batch images,
    maximising the student-teacher discrepancy; each student step then minimises it on kd_batch
    fresh images. There is no one-hot, BN or temperature term (`temperature` is unused).

    CIFAR presets: the authors' code, VainF/Data-Free-Adversarial-Distillation DFAD_cifar.py run as
    its README says (`--dataset cifar10|cifar100 --scheduler`, the other flags at their defaults):
    batch 256, student SGD lr 0.1 (momentum 0.9, weight decay 5e-4), generator Adam lr 1e-3 with
    torch's default betas (0.9, 0.999), nz 256 and ngf 64 (GeneratorA), 5 student steps per
    generator step, 500 "epochs" of 50 generator iterations (an evaluation each). The DataFree
    re-implementation (zju-vipa/CMI scripts/dfad_cifar10.sh: --batch_size 256 --lr 0.1 --epochs 200
    --kd_steps 5 --ep_steps 400 --g_steps 1 --lr_g 1e-3 --adv 1, i.e. 80,000 student steps, Adam
    betas (0.5, 0.999), weight decay 1e-4) is not what the presets follow.

    Departures: the reference's MultiStepLR (x0.1 at epochs 100 and 200) is the suite's cosine; its
    generator ends in Tanh + a non-affine BatchNorm (normalised images) where `LatentGenerator`
    ends in a Sigmoid ([0,1] images, then the dataset's normalisation); its student is in train
    mode during the generator step (BN on batch statistics), here in eval mode (the engine's
    `student_pass`); the reference takes the 5 student steps before the generator step, here after.
    """

    nz: int = 256
    ngf: int = 64
    oh: float = 0.0
    bn: float = 0.0
    adv: float = 1.0
    g_steps: int = 1
    s_steps: int = 5
    g_betas: tuple[float, ...] = (0.9, 0.999)

    def validate(self, method: str = "dfad") -> None:
        super().validate(method)
        if self.adv <= 0:
            raise UserError(f"{method}.adv={self.adv}: it must be > 0 (the generator's only loss is adversarial)")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=1, round_steps=1)
    # The reference's student steps: 500 epochs x 50 generator iterations x 5 student steps = 125,000;
    # round_steps 250 is its evaluation period (one "epoch" of 50 iterations x 5 student steps).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(nz=256, ngf=64, adv=1.0, oh=0.0, bn=0.0, lr_g=1e-3, g_betas=(0.9, 0.999), g_steps=1,
                      s_steps=5, kd_batch=256, lr=0.1, weight_decay=5e-4, temperature=1.0, round_steps=250,
                      paper_steps=125_000)
           for name in ("cifar10", "cifar100")},
        # Tuned for the quick suite (not from any paper): the reference's 5 student steps per generator
        # step. At --ratio 0.1 (144 images) kd_batch 8 gives 18 student steps, in two rounds of 9.
        # paper_steps 1,000 (a budget=steps run): 200 generator steps, a few minutes on one CPU core.
        "digits": dict(nz=64, ngf=16, adv=1.0, lr_g=1e-3, g_betas=(0.5, 0.999), g_steps=1, s_steps=5,
                       kd_batch=16, lr=0.1, temperature=1.0, round_steps=40, paper_steps=1000, synth_batch=64,
                       kd_steps=40, final_kd_steps=200),
    }


@register_method("dfad", "DFAD: online generator maximising the L1 student-teacher logit gap, the student closing it")
class Dfad(LatentGeneratorMethod, OnlineGeneratorMethod):
    """A min-max game on the L1 logit discrepancy: the generator's adversarial term is -L1 (it seeks
    hard samples), the student's loss is +L1 on fresh generator output."""

    Hparams = DfadHparams
    hp: DfadHparams

    def adversarial_term(self, step: GeneratorStep) -> torch.Tensor:
        """-L1(student, teacher): minimising it maximises the discrepancy."""
        return -logit_discrepancy(self.student_pass(step).logits, self.teacher_pass(step).logits)

    def student_loss(self, step: StudentStep) -> dict[str, torch.Tensor]:
        """The L1 logit discrepancy on the step's fresh images (DFAD's student loss, no KD)."""
        return {"l1": logit_discrepancy(step.s_logits, step.t_logits)}
