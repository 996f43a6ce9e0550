"""DFQ (Choi et al., "Data-Free Network Quantization With Adversarial Knowledge Distillation",
CVPR-W 2020): an online generator that maximises the teacher-student KL divergence under the
teacher's BatchNorm statistics and DAFL's categorical-entropy terms."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dfkd_bench import UserError, register_method
from dfkd_bench.engine import GeneratorStep, LatentGeneratorMethod, LatentHparams, OnlineGeneratorMethod, OnlineHparams
from dfkd_bench.engine import kd_loss, negative_batch_entropy, pseudo_label_ce


@dataclass
class DfqHparams(OnlineHparams, LatentHparams):
    """Generator loss = bn*BN + oh*CE(t, argmax t) + ie*(-H(mean softmax t)) + adv*(-KL(t || s)).

    BN is the base's BN-statistics loss on the teacher (momentum 0, as the reference's hooks);
    oh is the pseudo-label CE and ie the batch information entropy of DAFL (the paper's instance and
    batch categorical entropies); the adversarial term is minus the KL divergence KL(softmax t ||
    softmax s) at temperature 1 (batch mean), so the generator seeks images where the student
    disagrees with the teacher, with the student in eval mode. The student step is plain KD at
    `temperature`; before every `s_steps` student steps the generator (Fast's CIFAR
    `LatentGenerator`, z ~ N(0, 1) of `nz`) takes `g_steps` Adam steps at lr_g on fresh batches of
    kd_batch images, with no synthesis augmentation.

    CIFAR presets: the DataFree scripts' DFQ command (scripts/dfq/dfq_cifar.sh of zju-vipa/DataFree,
    found in the search index without its repository name, so not confirmed; the same for CIFAR-10 and
    -100): --batch_size 256 --lr 0.05 --epochs 200 --kd_steps 10 --ep_steps 400 --g_steps 1 --lr_g 1e-3
    --adv 1 --bn 1 --oh 1 --act 0 --balance 20 --T 1, with datafree_kd.py's nz 256 and ngf 64, weight
    decay 1e-4 and the synthesizer's KLDiv() (T = 1) as the adversarial criterion. zju-vipa/CMI's
    scripts/dfq/dfq_cifar10_wrn402_wrn161.sh differs (--lr 0.1 --T 20). The student's cosine to 2e-4
    (lr_min_ratio 2e-4 / 0.05) is that of zju-vipa/Fast-Datafree's datafree_kd.py, which shares
    DataFree's loop (not confirmed in DataFree itself); the generator's Adam betas (0.5, 0.999) those
    of GenerativeSynthesizer in zju-vipa/CMI and Fast-Datafree. `ie` is DataFree's --balance. The
    paper's own recipe (several generators and students, quantised students) is not followed.

    Departures: the datafree_kd.py of zju-vipa/CMI and Fast-Datafree (DataFree's loop) builds the
    synthesizer with `student=teacher`, so its adversarial term compares the teacher with itself and is
    always 0; here it uses the student, as the paper describes (max over the generator of the
    teacher-student KL). The one-hot term is CE to the teacher's own argmax, as in the reference (not
    to random target labels). The student's cosine steps once per student step rather than per
    epoch; `ie` clamps the batch-mean probabilities at 1e-12 before the log.
    """

    nz: int = 256
    ngf: int = 64
    ie: float = 20.0
    oh: float = 1.0
    bn: float = 1.0
    adv: float = 1.0

    def validate(self, method: str = "dfq") -> None:
        super().validate(method)
        if self.ie < 0:
            raise UserError(f"{method}.ie={self.ie}: it must be >= 0")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=1, round_steps=1)
    # The reference's student steps: epochs 200 x (ep_steps 400 // kd_steps 10) generator phases x
    # kd_steps 10 student steps = 200 x 400 = 80,000 (one generator step per 10 student steps);
    # round_steps 400 is its evaluation period (an epoch).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(nz=256, ngf=64, bn=1.0, oh=1.0, ie=20.0, adv=1.0, lr_g=1e-3, g_steps=1,
                      g_betas=(0.5, 0.999), s_steps=10, kd_batch=256, lr=0.05, weight_decay=1e-4,
                      lr_min_ratio=4e-3, temperature=1.0, round_steps=400, paper_steps=80_000)
           for name in ("cifar10", "cifar100")},
        # Tuned for the quick suite (not from any paper), at the suite's digits student rate (kd_steps 40
        # per synth_batch 64 images, final_kd_steps 200). At --ratio 0.1: 4 fresh batches of 36 (the 144
        # images), 290 student steps, ~73 on each batch, so kd_aug crops them (without it the student
        # stays near chance). The generator takes 24 steps every 24 student steps, so the first batch
        # comes from a trained generator (with 1-2 steps per student step it is one or two classes and
        # some seeds never recover); ie 20 (the reference's) keeps later batches from collapsing to a class.
        # paper_steps 300 (300 fresh batches, a budget=steps run) takes a minute or two on one CPU core.
        "digits": dict(nz=64, ngf=16, bn=1.0, oh=1.0, ie=20.0, adv=1.0, lr_g=1e-2, g_steps=24, s_steps=24,
                       kd_batch=36, kd_aug="crop:4", lr=0.05, temperature=4.0, round_steps=40, paper_steps=300,
                       synth_batch=64, kd_steps=40, final_kd_steps=200),
    }


@register_method("dfq", "DFQ: online adversarial generator under BN statistics and categorical-entropy terms")
class Dfq(LatentGeneratorMethod, OnlineGeneratorMethod):
    """The generator maximises the student's KL divergence from the teacher while matching the
    teacher's BN statistics and keeping its outputs confident and class-balanced; the student distils
    on fresh generator batches (the engine's online loop)."""

    Hparams = DfqHparams
    hp: DfqHparams

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """The base's bn/adv terms, oh on the teacher's own argmax, plus the batch entropy ie."""
        hp = self.hp
        terms = super().generator_terms(step)
        logits = self.teacher_pass(step).logits
        if hp.oh > 0:
            terms["oh"] = hp.oh * pseudo_label_ce(logits)
        if hp.ie > 0:
            terms["ie"] = hp.ie * negative_batch_entropy(logits)
        return terms

    def adversarial_term(self, step: GeneratorStep) -> torch.Tensor:
        """Minus KL(softmax t || softmax s) at temperature 1: the generator seeks disagreement."""
        return -kd_loss(self.student_pass(step).logits, self.teacher_pass(step).logits, 1.0)
