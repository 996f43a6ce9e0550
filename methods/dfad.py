"""DFAD (Fang et al., "Data-Free Adversarial Distillation", 2019): an online generator that makes
hard samples, those where student and teacher logits differ most, and a student that closes the gap."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dfkd_bench.api import (GeneratorStep, OnlineLatentGeneratorMethod, OnlineLatentHparams,
                            ReferenceSchedule, UserError, datafree_schedules, logit_discrepancy,
                            register_method)


@dataclass
class DfadHparams(OnlineLatentHparams):
    """Generator loss = adv * (-L1(s, t)); student loss = L1(s, t) (mean absolute logit difference,
    `student_criterion` "l1").

    Before every `s_steps` student steps the generator (DataFree's `LargeGenerator` width, `stem` 4,
    z ~ N(0, 1) of `nz`) takes `g_steps` Adam steps (lr_g, betas g_betas) on fresh batches of kd_batch
    images, maximising the student-teacher discrepancy; each student step then minimises it on a
    fresh batch drawn in `sample_mode`. There is no one-hot, BN or temperature term.

    CIFAR presets and `--protocol paper`: zju-vipa/DataFree's DFAD, scripts/dfad_cifar10.sh (in the
    repository until commit 6c02927; read at acbbea6): --batch_size 256 --lr 0.1 --epochs 200 --kd_steps
    5 --ep_steps 400 --g_steps 1 --lr_g 1e-3 --adv 1 --T 1, with datafree_kd.py (commit 9e79fa9): nz
    256, `LargeGenerator(ngf=64)`, torch.nn.L1Loss() as the student's criterion and, through the
    synthesizer, the adversarial one (~259), SGD weight decay 1e-4, a cosine to 0 stepped once an epoch,
    Adam betas (0.5, 0.999) and eval-mode `sample()`. DataFree has no CIFAR-100 DFAD script: CIFAR-100
    takes the CIFAR-10 one.

    The authors' code (VainF/Data-Free-Adversarial-Distillation DFAD_cifar.py --scheduler) differs:
    500 "epochs" of 50 iterations of 5 student steps (125,000), weight decay 5e-4, MultiStepLR x0.1 at
    epochs 100 and 200 for the student and the generator, Adam at torch's default betas (0.9, 0.999),
    `GeneratorA` (2*ngf channels, Tanh and a non-affine BatchNorm at the output), train-mode sampling,
    the student in train mode during the generator step, and the 5 student steps before the
    generator step. The presets follow DataFree (the same code as the suite's other online methods);
    the MultiStepLR belongs to VainF's code only, DataFree's generator keeps a constant lr_g.
    """

    nz: int = 256
    ngf: int = 64
    oh: float = 0.0
    bn: float = 0.0
    adv: float = 1.0
    g_steps: int = 1
    s_steps: int = 5
    student_criterion: str = "l1"

    def validate(self, method: str = "dfad") -> None:
        super().validate(method)
        if self.adv <= 0:
            raise UserError(f"{method}.adv={self.adv}: it must be > 0 (the generator's only loss is adversarial)")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=1, round_steps=1)
    # The reference's student steps: epochs 200 x (ep_steps 400 // kd_steps 5) generator phases x
    # kd_steps 5 student steps = 80,000; round_steps 400 is its evaluation period (an epoch).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(nz=256, ngf=64, stem=4, adv=1.0, oh=0.0, bn=0.0, lr_g=1e-3, g_betas=(0.5, 0.999), g_steps=1,
                      s_steps=5, kd_batch=256, lr=0.1, weight_decay=1e-4, lr_min_ratio=0.0, sample_mode="eval",
                      student_criterion="l1", round_steps=400, paper_steps=80_000)
           for name in ("cifar10", "cifar100")},
        # Tuned for the quick suite (not from any paper): the reference's 5 student steps per generator
        # step. At --ratio 0.1 (144 images) kd_batch 8 gives 18 student steps, in two rounds of 9.
        # Train-mode sampling, as VainF's code samples: DataFree's eval mode collapses the digits draws
        # onto a class at this budget (issue 16: 76/70% fell to 17/38% at seeds 0/1). Fast's 2*ngf width.
        # paper_steps 1,000 (a budget=steps run): 200 generator steps, a few minutes on one CPU core.
        "digits": dict(nz=64, ngf=16, stem=2, adv=1.0, lr_g=1e-3, g_betas=(0.5, 0.999), g_steps=1, s_steps=5,
                       kd_batch=16, lr=0.1, sample_mode="train", student_criterion="l1", round_steps=40,
                       paper_steps=1000, synth_batch=64, kd_steps=40, final_kd_steps=200),
    }
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = datafree_schedules(
        "@acbbea6 scripts/dfad_cifar10.sh (lr 0.1, L1 between logits)")


@register_method("dfad", "DFAD: online generator maximising the L1 student-teacher logit gap, the student closing it")
class Dfad(OnlineLatentGeneratorMethod):
    """A min-max game on the L1 logit discrepancy: the generator's adversarial term is -L1 (it seeks
    hard samples), the student's loss is +L1 on fresh generator output."""

    Hparams = DfadHparams
    hp: DfadHparams

    def adversarial_term(self, step: GeneratorStep) -> torch.Tensor:
        """-L1(student, teacher): minimising it maximises the discrepancy."""
        return -logit_discrepancy(self.student_pass(step).logits, self.teacher_pass(step).logits)
