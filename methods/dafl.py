"""DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019): an online generator
trained to make the teacher confident, strongly activated and class-balanced."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dfkd_bench import UserError, register_method
from dfkd_bench.engine import FeatureTap, GeneratorStep, LatentGenerator, MethodContext, OnlineGeneratorMethod
from dfkd_bench.engine import OnlineHparams


def pseudo_label_ce(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's one-hot loss: CE of the teacher's logits against its own argmax (confident outputs)."""
    return F.cross_entropy(logits, logits.argmax(1))


def negative_batch_entropy(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's information-entropy loss: -H(mean softmax over the batch), lowest for a balanced batch."""
    p = F.softmax(logits.float(), dim=1).mean(0)
    return (p * torch.log(p.clamp_min(1e-12))).sum()


@dataclass
class DaflHparams(OnlineHparams):
    """Generator loss = oh*CE(t, argmax t) + act*(-mean|f_t|) + ie*(-H(mean softmax t)) (+ bn*BN + adv*adv).

    f_t is the teacher's penultimate feature vector (the input of its classifier). bn and adv are
    off in every preset (the base's BN-statistics loss and Fast's boundary loss when turned on).
    The student step is plain KD at `temperature`; before every `s_steps` student steps the
    generator (Fast's CIFAR `LatentGenerator`, z ~ N(0, 1) of `nz`) takes `g_steps` Adam steps at
    lr_g on fresh batches of kd_batch images, with no synthesis augmentation (as the reference).

    CIFAR presets: zju-vipa/DataFree scripts/dafl/dafl_cifar.sh (the same for CIFAR-10 and -100):
    --batch_size 256 --lr 0.1 --epochs 200 --kd_steps 5 --ep_steps 400 --g_steps 1 --lr_g 1e-3
    --adv 0 --bn 0 --oh 1 --act 0.001 --balance 20 --T 20, nz 512 and ngf 64 (datafree_kd.py),
    student SGD weight decay 1e-4, cosine over 200 epochs to 2e-4 (lr_min_ratio 2e-4 / 0.1; the
    cosine is from the datafree_kd.py of zju-vipa/Fast-Datafree, which shares DataFree's loop: not
    confirmed in DataFree itself). The generator's Adam betas (0.5, 0.999) are those of
    GenerativeSynthesizer in zju-vipa/CMI and zju-vipa/Fast-Datafree (a fork of DataFree has
    (0.9, 0.99)). `ie` is DataFree's --balance, `act` its --act.
    The original DAFL code (huawei-noah, CIFAR: lr_G 0.02, lr_S 0.1, batch 1024, latent 1000, oh
    0.05, ie 5, a 0.01, 2000 epochs of 120 iterations, one generator and one student step each) is
    not what the presets follow.

    Departures: the student's cosine steps once per student step rather than once per epoch; the
    reference's student steps see normalised images of the generator in train mode, as here.
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
        for name in ("act", "ie", "oh", "bn", "adv"):
            if getattr(self, name) < 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 0")
        for name in ("nz", "ngf"):
            if getattr(self, name) < 1:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 1")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=1, round_steps=1)
    # The reference's student steps: epochs 200 x (ep_steps 400 // kd_steps 5) generator phases x
    # kd_steps 5 student steps = 200 x 400 = 80,000 (one generator step per 5 student steps).
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **{name: dict(nz=512, ngf=64, oh=1.0, act=0.001, ie=20.0, bn=0.0, adv=0.0, lr_g=1e-3, g_steps=1,
                      g_betas=(0.5, 0.999), s_steps=5, kd_batch=256, lr=0.1, weight_decay=1e-4,
                      lr_min_ratio=2e-3, temperature=20.0, round_steps=400, paper_steps=80_000)
           for name in ("cifar10", "cifar100")},
        # Tuned for the quick suite (not from any paper). At --ratio 0.1 (144 images) kd_batch 8 gives 18
        # student steps, two rounds of 9; even KD on 144 real training images reaches only ~10-15% in
        # 18 steps with this student, so --ratio 0.1 stays near chance. The generator takes 10 steps
        # before every student step. act is 0: the digits teacher is saturated (one class at confidence
        # ~1) on the untrained generator's output, so oh and ie have vanishing gradients and any act > 0
        # (1e-4 tried) drives, through Adam's scale invariance, the generator to a single class.
        # paper_steps 300 (2,400 images) is a budget=steps run of about two minutes on one CPU core.
        "digits": dict(nz=64, ngf=16, oh=1.0, act=0.0, ie=5.0, lr_g=1e-2, g_steps=10, s_steps=1, kd_batch=16,
                       lr=0.05, temperature=1.0, round_steps=40, paper_steps=300, synth_batch=64, kd_steps=40,
                       final_kd_steps=200),
    }


@register_method("dafl", "DAFL: online generator for confident, strongly activated, class-balanced teacher outputs")
class Dafl(OnlineGeneratorMethod):
    """The generator learns to make the teacher's outputs one-hot (pseudo-label CE), its penultimate
    features large (activation loss) and its batch-mean prediction uniform (information entropy);
    the student distils on fresh generator output at every step.

    The teacher's penultimate features come from a `FeatureTap` on the teacher, recording only
    during the generator's teacher forward."""

    Hparams = DaflHparams
    hp: DaflHparams

    def __init__(self, ctx: MethodContext, hparams: DaflHparams) -> None:
        super().__init__(ctx, hparams)
        self.teacher_tap = self.keep_hook(FeatureTap(ctx.teacher))

    @classmethod
    def check_resolution(cls, resolution: int) -> None:
        """The CIFAR generator quadruples an (r/4)x(r/4) map."""
        if resolution % 4:
            raise UserError(f"--resolution {resolution}: {cls.name} generates at multiples of 4 only")

    def build_generator(self) -> LatentGenerator:
        """Fast's CIFAR generator at the run's resolution."""
        hp, ctx = self.hp, self.ctx
        return LatentGenerator(hp.nz, hp.ngf, ctx.resolution, ctx.spec.in_chans).to(ctx.device)

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """The base's bn/adv terms, oh on the teacher's own argmax, plus act and ie."""
        hp = self.hp
        with self.teacher_tap.capture() as tap:
            logits = self.teacher_pass(step).logits
        terms = super().generator_terms(step)
        if hp.oh > 0:
            terms["oh"] = hp.oh * pseudo_label_ce(logits)
        if hp.act > 0:
            terms["act"] = -hp.act * tap.penultimate.float().abs().mean()
        if hp.ie > 0:
            terms["ie"] = hp.ie * negative_batch_entropy(logits)
        return terms
