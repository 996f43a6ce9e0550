"""DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019): an online generator
trained to make the teacher confident, strongly activated and class-balanced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from dfkd_bench.api import (PENULTIMATE, ForwardRecorder, GeneratorStep, MethodContext, OnlineLatentGeneratorMethod,
                            OnlineLatentHparams, ReferenceSchedule, UserError, datafree_schedules,
                            negative_batch_entropy, pseudo_label_ce, register_method)


@dataclass
class DaflHparams(OnlineLatentHparams):
    """Generator loss = oh*CE(t, argmax t) + act*(-mean|f_t|) + ie*(sum p log p of the batch-mean
    softmax t) (+ bn*BN + adv*adv).

    f_t is the teacher's penultimate feature vector (the input of its classifier). bn and adv are
    off in every preset (the base's BN-statistics loss and Fast's boundary loss when turned on).
    Before every `s_steps` student steps the generator (DataFree's `LargeGenerator` width, `stem` 4,
    z ~ N(0, 1) of `nz`) takes `g_steps` Adam steps at lr_g on fresh batches of kd_batch images, with
    no synthesis augmentation; each student step then draws a fresh batch in `sample_mode` and takes
    `student_criterion`.

    CIFAR presets and `--protocol paper`: zju-vipa/DataFree (commit 9e79fa9),
    scripts/dafl/dafl_cifar10_wrn402_wrn161.sh: --batch_size 256 --lr 0.1 --epochs 200 --kd_steps 5
    --ep_steps 400 --g_steps 1 --lr_g 1e-3 --adv 0 --T 20 --bn 0 --oh 1 --act 0.001 --balance 20;
    datafree_kd.py: nz 512 and `LargeGenerator(ngf=64)` (~256-257, 8.78M parameters), the criterion
    replaced by KLDiv() at T 1 (~259: the script's --T 20 never reaches the student), SGD momentum 0.9
    and weight decay 1e-4 (~110, ~287), CosineAnnealingLR(T_max=epochs) stepped once an epoch (~290,
    ~351), so to 0; generative.py: Adam betas (0.5, 0.999) (~40) and `sample()` in eval mode (~79).
    DataFree has no CIFAR-100 DAFL script: CIFAR-100 takes the CIFAR-10 one. `ie` is its --balance,
    `act` its --act. The original DAFL code (CIFAR-10 README: --n_epochs 2000 --batch_size 1024
    --lr_G 0.02 --lr_S 0.1 --latent_dim 1000, oh 1, ie 5, a 0.1) is not what the presets follow.

    Departures: `ie` clamps the batch-mean probabilities at 1e-12 before the log (the reference takes
    log p as is); the student's labels are the base's random ones, unused by its loss (the generator
    is unconditional).
    """

    nz: int = 512
    ngf: int = 64
    act: float = 0.001
    ie: float = 20.0
    oh: float = 1.0
    bn: float = 0.0
    adv: float = 0.0

    def validate(self, method: str = "dafl") -> None:
        super().validate(method)
        for name in ("act", "ie"):
            if getattr(self, name) < 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 0")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=1, round_steps=1)
    # The reference's student steps: epochs 200 x (ep_steps 400 // kd_steps 5) generator phases x
    # kd_steps 5 student steps = 200 x 400 = 80,000 (one generator step per 5 student steps);
    # round_steps 400 is its evaluation period (an epoch).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(nz=512, ngf=64, stem=4, oh=1.0, act=0.001, ie=20.0, bn=0.0, adv=0.0, lr_g=1e-3, g_steps=1,
                      g_betas=(0.5, 0.999), s_steps=5, kd_batch=256, lr=0.1, weight_decay=1e-4, lr_min_ratio=0.0,
                      sample_mode="eval", student_criterion="kl", round_steps=400, paper_steps=80_000)
           for name in ("cifar10", "cifar100")},
        # Tuned for the quick suite (not from any paper), at the suite's digits student rate (kd_steps 40
        # per synth_batch 64 images, final_kd_steps 200). At --ratio 0.1: 4 fresh batches of 36 (the 144
        # images), 290 student steps, ~73 on each batch, so kd_aug crops them (without it the student
        # stays at chance). The generator takes 24 steps every 24 student steps, so the first batch
        # comes from a trained generator. act is 0: the digits teacher is saturated (one class at
        # confidence ~1) on the untrained generator's output, so oh and ie have vanishing gradients and
        # any act > 0 (1e-4 tried) drives, through Adam's scale invariance, every image to that class.
        # Train-mode sampling (batch statistics), not DataFree's eval mode: with so few generator steps
        # the running statistics lag the generator and eval-mode draws collapse onto one class (issue 16:
        # the DataFree loop on digits, DFAD, fell from 76/70% to 17/38% at seeds 0/1). Fast's 2*ngf width.
        # paper_steps 300 (300 fresh batches, a budget=steps run) takes a minute or two on one CPU core.
        "digits": dict(nz=64, ngf=16, stem=2, oh=1.0, act=0.0, ie=5.0, lr_g=3e-2, g_steps=24, s_steps=24,
                       kd_batch=36, kd_aug="crop:4", lr=0.05, sample_mode="train", student_criterion="kl",
                       round_steps=40, paper_steps=300, synth_batch=64, kd_steps=40, final_kd_steps=200),
    }
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = datafree_schedules(
        "@9e79fa9 scripts/dafl/dafl_cifar10_wrn402_wrn161.sh (lr 0.1, KL at T 1)")


@register_method("dafl", "DAFL: online generator for confident, strongly activated, class-balanced teacher outputs")
class Dafl(OnlineLatentGeneratorMethod):
    """The generator learns to make the teacher's outputs one-hot (pseudo-label CE), its penultimate
    features large (activation loss) and its batch-mean prediction uniform (information entropy);
    the student distils on fresh generator batches (the engine's online loop).

    The teacher's penultimate features come from a `ForwardRecorder` on the teacher's classifier
    input, recording only during the generator's teacher forward."""

    Hparams = DaflHparams
    hp: DaflHparams

    def __init__(self, ctx: MethodContext, hparams: DaflHparams) -> None:
        super().__init__(ctx, hparams)
        self.teacher_tap = self.keep_hook(ForwardRecorder(ctx.teacher, {"penultimate": PENULTIMATE}))

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """The base's bn/adv terms, oh on the teacher's own argmax, plus act and ie."""
        hp = self.hp
        with self.teacher_tap.capture() as tap:
            logits = self.teacher_pass(step).logits
        terms = super().generator_terms(step)
        if hp.oh > 0:
            terms["oh"] = hp.oh * pseudo_label_ce(logits)
        if hp.act > 0:
            terms["act"] = -hp.act * tap.latest("penultimate").float().abs().mean()
        if hp.ie > 0:
            terms["ie"] = hp.ie * negative_batch_entropy(logits)
        return terms
