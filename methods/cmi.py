"""CMI (Fang et al., IJCAI 2021): contrastive model inversion, a generator re-initialised every round
and a contrastive term that pushes each new image away from the others and from earlier rounds'."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from dfkd_bench.api import (BestIterate, ForwardRecorder, GeneratorStep, GradientGroups, LatentGeneratorMethod,
                            LatentHparams, MethodContext, ParameterGroups, ReferenceSchedule, RoundInfo, UserError,
                            batchnorm_names, register_method)

CR_FEATURES = ("mean", "mean_var")
CR_LAYERS = ("auto", "bn", "stages")
STAGES = ("layer1", "layer2", "layer3", "layer4")
# zju-vipa/DataFree (the CMI authors' code, zju-vipa/CMI is the same tree) @ 9e79fa9: datafree_kd.py builds
# CMISynthesizer with bank_size=40960, n_neg=4096, head_dim=256, nz=256, ngf=64 (lines 266-281); the rest of
# the CIFAR-10 preset is the from-scratch script, scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh.
SCRATCH_SCRIPT = "zju-vipa/DataFree scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh"
CIFAR = dict(nz=256, ngf=64, g_steps=200, lr_g=1e-3, lr_z=1e-3, lr_head=1e-3, bn=1.0, oh=1.0, adv=0.5,
             cr=0.8, cr_T=0.1, head_dim=256, bank_size=40960, n_neg=4096, synth_batch=256, kd_steps=400,
             kd_batch=128, lr=0.1, lr_min_ratio=0.0, weight_decay=1e-4, temperature=20.0, warmup_rounds=0)


@dataclass
class CmiHparams(LatentHparams):
    """Generator loss = bn*BN + oh*CE + adv*adversarial (after warm-up) + cr*contrastive.

    Every round re-initialises the generator (Fast's CIFAR generator, the reference's `Generator`:
    Linear/conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0, as its `reset_model`) and
    draws a fresh latent z ~ N(0, 1) (nz), then takes `g_steps` Adam steps (betas `g_betas`) on the
    generator (lr_g) and z (lr_z) and banks the lowest-loss iterate (`keep_best`).

    Contrastive term (`cr`, temperature `cr_T`): an image's feature is the concatenation of the
    per-sample channel means of the inputs of the teacher's feature modules (`cr_feature="mean"`, the
    reference's InstanceMeanHook; "mean_var" adds the per-sample channel variances). `cr_layers`:
    "bn", every BatchNorm2d (the reference's default); "stages", the inputs of a ResNet's layer1-4 (the
    reference's choice for its ResNet-34 teacher, 512 dims instead of 8512); "auto", stages when the
    teacher has layer1-4 (CIFAR and torchvision ResNets), else bn.
    It is taken on the global view (the synthesis augmentation, crop pad 4 + flip at 32 px, the forward
    that gives the BN and CE terms) and on a local view (RandomResizedCrop of area `local_scale`-1,
    aspect 3/4-4/3, + flip; the reference's 0.25). An MLP head (Linear(D, D), ReLU, Linear(D,
    head_dim), L2-normalised) embeds both. InfoNCE: each local embedding's positive is its own image's
    global embedding (detached); the negatives are the other images' and `n_neg` (local, global) pairs
    drawn from a memory bank of the kept features of earlier rounds (at most `bank_size`, oldest
    dropped first). With a non-empty bank the loss is mean(CE of the new rows) + mean(CE of the bank's
    rows), as the reference splits it. The head has its own Adam (lr_head, default betas, kept across
    rounds), stepped with each generator step.

    BN loss without momentum (bn_momentum 0) and the adversarial term (the base's boundary loss,
    -mean(1[argmax S = argmax T] KL(T || S))) are the reference's.

    Presets. CIFAR-10: the reference's from-scratch script, zju-vipa/DataFree scripts/cmi/scratch_cmi_
    cifar10_wrn402_wrn161.sh (--synthesis_batch_size 256 --batch_size 128 --lr 0.1 --kd_steps 400
    --ep_steps 400 --g_steps 200 --lr_g 1e-3 --adv 0.5 --bn 1.0 --oh 1.0 --cr 0.8 --cr_T 0.1 --T 20, the
    default --epochs 200), weight decay 1e-4 (datafree_kd.py's default), the rest from datafree_kd.py and
    CMISynthesizer: one Adam (betas 0.5/0.999) at lr_g over generator and z (so lr_z = lr_g), the head's
    Adam at lr_g (so lr_head = lr_g). The student's lr follows a cosine to 0 stepped once per epoch
    (CosineAnnealingLR(T_max=epochs), datafree_kd.py line 290; the scripts' --lr_decay_milestones is
    parsed but unused, its MultiStepLR is commented out). The adversarial script (adv_cmi_..., 40 epochs
    x 2000 KD steps, oh 0.5) starts from a pre-inverted set (`--cmi_init`) that this suite does not
    make, so it is not the preset. CIFAR-100: no CMI script in the reference; the CIFAR-10 settings.
    Digits: tuned for the quick suite with the suite's digits student recipe; 30 generator steps at
    lr_g = lr_z = 1e-2 replace 200 at 1e-3.
    """

    g_steps: int = 200
    lr_z: float = 1e-3
    lr_head: float = 1e-3
    bn: float = 1.0
    oh: float = 0.5
    adv: float = 0.5
    bn_momentum: float = 0.0
    cr: float = 0.8
    cr_T: float = 0.1
    cr_feature: str = "mean"
    cr_layers: str = "auto"
    head_dim: int = 256
    bank_size: int = 40960
    n_neg: int = 4096
    local_scale: float = 0.25

    def validate(self, method: str = "cmi") -> None:
        super().validate(method)
        self.check_choice(method, "cr_feature", self.cr_feature, CR_FEATURES)
        self.check_choice(method, "cr_layers", self.cr_layers, CR_LAYERS)
        for name in ("head_dim", "bank_size"):
            if getattr(self, name) < 1:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be >= 1")
        for name in ("cr_T", "lr_g", "lr_z", "lr_head"):
            if not getattr(self, name) > 0:
                raise UserError(f"{method}.{name}={getattr(self, name)}: it must be > 0")
        if self.cr < 0 or self.n_neg < 0:
            raise UserError(f"{method}.cr={self.cr}, n_neg={self.n_neg}: they must be >= 0")
        if not 0 < self.local_scale <= 1:
            raise UserError(f"{method}.local_scale={self.local_scale}: it must be in (0, 1]")

    SMOKE: ClassVar[dict[str, Any]] = dict(g_steps=2, n_neg=16)
    # One round of synth_batch images an epoch (ep_steps // kd_steps = 1), then 400 student steps; no
    # warm-up, 200 epochs: the from-scratch script (no pre-inverted start set).
    PAPER: ClassVar[dict[str, ReferenceSchedule]] = {
        name: ReferenceSchedule(warmup_epochs=0, kd_steps_per_epoch=400, reference_epochs=200, source=SCRATCH_SCRIPT,
                                note="CMI from scratch (400 KD steps an epoch, 200 epochs, oh 1.0): the "
                                     "adversarial script's 40 x 2000 steps start from a --cmi_init "
                                     "pre-inverted set, which is not made")
        for name in ("cifar10", "cifar100")}
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # The suite's digits student recipe (Fast's digits preset), a small generator, few steps.
        "digits": dict(nz=64, ngf=16, g_steps=30, lr_g=1e-2, lr_z=1e-2, lr_head=1e-3, head_dim=64, bank_size=4096,
                       n_neg=1024, synth_batch=64, warmup_rounds=2, kd_steps=40, kd_batch=128, lr=0.1,
                       temperature=4.0, final_kd_steps=200),
        "cifar10": dict(CIFAR),
        # The reference has no CMI script for CIFAR-100: the CIFAR-10 settings.
        "cifar100": dict(CIFAR),
    }


def feature_modules(model: nn.Module, choice: str) -> list[str]:
    """The names of the modules whose inputs make CMI's feature: every BatchNorm2d ("bn"), or a ResNet's
    layer1-4 ("stages", the reference's choice for its ResNet-34 teacher); "auto": stages when the model has them."""
    has_stages = all(isinstance(getattr(model, name, None), nn.Module) for name in STAGES)
    if choice == "stages" and not has_stages:
        raise UserError("cmi.cr_layers=stages: the teacher has no layer1-4; use bn or auto")
    if choice == "stages" or (choice == "auto" and has_stages):
        return list(STAGES)
    return batchnorm_names(model)


def instance_mean(inputs: tuple[Any, ...], output: Any) -> torch.Tensor:
    """(N, C): the per-sample channel mean of a call's input (the reference's InstanceMeanHook)."""
    return inputs[0].float().mean(dim=(2, 3))


def instance_mean_var(inputs: tuple[Any, ...], output: Any) -> torch.Tensor:
    """(N, 2C): the per-sample channel mean, then variance (biased), of a call's input."""
    var, mean = torch.var_mean(inputs[0].float(), dim=(2, 3), unbiased=False)
    return torch.cat([mean, var], dim=1)


def instance_statistics(model: nn.Module, names: Sequence[str], with_var: bool = False) -> ForwardRecorder:
    """A recorder of the per-sample input statistics of the named modules (a module called twice in a
    forward keeps its last call, as the reference's hook does); `instance_features` reads it."""
    return ForwardRecorder(model, names, extract=instance_mean_var if with_var else instance_mean)


def instance_features(recorder: ForwardRecorder) -> torch.Tensor:
    """(N, D): the statistics the recorder's modules recorded in the latest forward, concatenated in
    the order the modules were named."""
    latest = recorder.last()
    missing = [i for i, name in enumerate(recorder.modules) if name not in latest]
    if missing or not recorder.modules:
        raise RuntimeError(f"cmi: feature modules {missing or 'none'} recorded no input in this forward")
    return torch.cat([latest[name] for name in recorder.modules], dim=1)


class FeatureBank:
    """The kept (local, global) features of earlier rounds, oldest first, at most `size` rows, on the device."""

    def __init__(self, size: int, dim: int, device: torch.device) -> None:
        self.size = size
        self.data = torch.zeros(0, dim, device=device)

    def __len__(self) -> int:
        return self.data.shape[0]

    def add(self, features: torch.Tensor) -> None:
        """Append a round's rows, dropping the oldest beyond `size`."""
        self.data = torch.cat([self.data, features.detach().to(self.data)])[-self.size:]

    def sample(self, k: int, generator: torch.Generator) -> torch.Tensor:
        """k rows drawn without replacement (all of them, without a draw, when the bank holds <= k)."""
        if len(self) <= k:
            return self.data
        index = torch.randperm(len(self), generator=generator, device=generator.device)[:k]
        return self.data[index.to(self.data.device)]

    def state_dict(self) -> dict[str, Any]:
        return {"data": self.data}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data = state["data"].to(self.data)


def local_crop(x: torch.Tensor, min_scale: float, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """Per-image RandomResizedCrop (area min_scale-1 of the image, aspect 3/4-4/3, inside the image)
    back to the image's size, bilinear; with `flip`, each crop mirrored with probability 1/2."""
    n = x.shape[0]
    u = torch.rand(n, 5, generator=generator, device=generator.device).to(device=x.device, dtype=x.dtype)
    area = min_scale + (1 - min_scale) * u[:, 0]
    aspect = torch.exp(math.log(3 / 4) + math.log(16 / 9) * u[:, 1])
    sw, sh = torch.sqrt(area * aspect).clamp(max=1.0), torch.sqrt(area / aspect).clamp(max=1.0)
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    mirror = (u[:, 4] < 0.5) & flip
    theta[:, 0, 0] = sw * (1 - 2 * mirror.to(x.dtype))
    theta[:, 0, 2] = (2 * u[:, 2] - 1) * (1 - sw)
    theta[:, 1, 1] = sh
    theta[:, 1, 2] = (2 * u[:, 3] - 1) * (1 - sh)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def contrastive_loss(local: torch.Tensor, global_: torch.Tensor, n_new: int, temperature: float) -> torch.Tensor:
    """InfoNCE of local embedding i against every global one (detached), row i the positive:
    mean CE of the first n_new (new) rows, plus mean CE of the rest (bank) rows when there are any."""
    logits = local @ global_.detach().T / temperature
    ce = F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device), reduction="none")
    return ce[:n_new].mean() + (ce[n_new:].mean() if ce.shape[0] > n_new else 0.0)


@register_method("cmi", "CMI: generator re-initialised each round, contrastive term against a bank of teacher features")
class Cmi(LatentGeneratorMethod):
    """Contrastive model inversion (see `CmiHparams` for the loss). Departures from zju-vipa/CMI:

    - No pre-inverted start set (the reference's adversarial CIFAR-10 script loads ~50k images made
      by an earlier CMI run, `--cmi_init`); the bank of images, and of features, starts empty, as in
      the reference's from-scratch script, which the presets and `--protocol paper` follow.
    - The adversarial term waits for the end of the warm-up rounds (the base's gate); the reference
      has no warm-up (its presets here have none either).
    - The bank sits on the device and keeps features in arrival order; the reference keeps a CPU ring
      buffer pre-filled with N(0, 1) rows that it never samples before they are overwritten.
    - `cr_layers="auto"` takes the inputs of layer1-4 for every ResNet teacher; the reference does so
      for its ResNet-34 teacher only (its other ResNet teachers' runs are not published).
    - The local view is this file's batched `local_crop`: crop sides are clamped inside the image
      where kornia's RandomResizedCrop re-draws them.

    In a process group each round's generator is rank 0's draw (broadcast), the generator's and the
    head's gradients are averaged, and every rank banks the features of every rank's images.
    """

    Hparams = CmiHparams
    hp: CmiHparams

    def __init__(self, ctx: MethodContext, hparams: CmiHparams) -> None:
        super().__init__(ctx, hparams)
        names = feature_modules(ctx.teacher, hparams.cr_layers)
        self.instance_stats = self.keep_hook(instance_statistics(ctx.teacher, names, hparams.cr_feature == "mean_var"))
        dim = self.feature_dim()
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, hparams.head_dim)).to(ctx.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=hparams.lr_head)
        self.bank = FeatureBank(hparams.bank_size, 2 * dim, ctx.device)
        self._step_features: torch.Tensor | None = None
        self._kept = BestIterate()

    @torch.no_grad()
    def feature_dim(self) -> int:
        """Length of one image's feature, from a one-image probe forward of the teacher (in eval mode)."""
        ctx, r = self.ctx, self.ctx.resolution
        with self.instance_stats.capture(), ctx.autocast():
            ctx.teacher(self.model_input(torch.zeros(1, ctx.spec.in_chans, r, r, device=ctx.device)))
            return instance_features(self.instance_stats).shape[1]

    @torch.no_grad()
    def reinitialise_generator(self) -> None:
        """The reference's reset_model, drawn with the run's RNG: conv/linear weights N(0, 0.02),
        BatchNorm weights N(1, 0.02), biases 0 (BN running statistics reset too; they are never read)."""
        g = self.ctx.generator
        for module in self.generator.modules():
            if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.BatchNorm2d)):
                centre = 1.0 if isinstance(module, nn.BatchNorm2d) else 0.0
                draw = torch.randn(module.weight.shape, generator=g, device=g.device)
                module.weight.copy_(draw.to(module.weight) * 0.02 + centre)
                if module.bias is not None:
                    module.bias.zero_()
            if isinstance(module, nn.BatchNorm2d):
                module.reset_running_stats()

    def start_round(self, round: RoundInfo) -> None:
        """A fresh generator (rank 0's in a process group), and no kept features yet."""
        self.reinitialise_generator()
        self.ctx.group.broadcast_module_(self.generator)
        self._kept = BestIterate()
        self._step_features = None

    def shared_modules(self) -> dict[str, nn.Module]:
        """The base's, and the contrastive head."""
        return {**super().shared_modules(), "head": self.head}

    def round_latent(self, labels: torch.Tensor) -> torch.Tensor:
        """z ~ N(0, 1), optimised with the generator."""
        return super().round_latent(labels).requires_grad_(True)

    def _head_parameters(self) -> list[torch.Tensor]:
        """The head's parameters when the contrastive term is on (it trains nothing otherwise)."""
        return list(self.head.parameters()) if self.hp.cr > 0 else []

    def round_parameters(self, latent: torch.Tensor) -> ParameterGroups:
        """The generator's parameters, the latent, and the head's."""
        return {"generator": list(self.generator.parameters()), "latent": [latent], "head": self._head_parameters()}

    def round_optimizer(self, groups: ParameterGroups) -> torch.optim.Optimizer:
        """Adam over the generator (lr_g) and the latent (lr_z); the head has its own, kept across rounds."""
        return torch.optim.Adam([{"params": groups["generator"]}, {"params": groups["latent"], "lr": self.hp.lr_z}],
                                lr=self.hp.lr_g, betas=tuple(self.hp.g_betas))

    def apply_gradients(self, groups: ParameterGroups, grads: GradientGroups, optimizer: torch.optim.Optimizer) -> None:
        """Step the head's optimiser with its gradients, the round's with the rest."""
        if groups["head"]:
            for p, g in zip(groups["head"], grads["head"]):
                p.grad = g
            self.head_optimizer.step()
        rest = {name: params for name, params in groups.items() if name != "head"}
        super().apply_gradients(rest, grads, optimizer)

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """The base's terms, plus cr * the contrastive term on the global and a local view."""
        if self.hp.cr <= 0:
            return super().generator_terms(step)
        with self.instance_stats.capture():
            self.teacher_pass(step)
            global_features = instance_features(self.instance_stats)
        terms = super().generator_terms(step)
        local_features = self._local_features(step)
        self._step_features = torch.cat([local_features, global_features], dim=1).detach()
        terms["cr"] = self.hp.cr * self._contrastive_term(local_features, global_features)
        return terms

    def local_view(self, images: torch.Tensor) -> torch.Tensor:
        """The contrastive term's local view of [0,1] images: a random resized crop (+ flip)."""
        return local_crop(images, self.hp.local_scale, self.ctx.spec.hflip, self.ctx.generator)

    def _local_features(self, step: GeneratorStep) -> torch.Tensor:
        """The teacher's features of the local view of the step's images."""
        ctx = self.ctx
        with self.instance_stats.capture(), ctx.autocast():
            ctx.teacher(self.model_input(self.local_view(step.images)))
            return instance_features(self.instance_stats)

    def _contrastive_term(self, local: torch.Tensor, global_: torch.Tensor) -> torch.Tensor:
        """InfoNCE over the new images and n_neg bank pairs, both views embedded by the head."""
        cached_local, cached_global = self.bank.sample(self.hp.n_neg, self.ctx.generator).chunk(2, dim=1)
        embedded = F.normalize(self.head(torch.cat([local, cached_local, global_, cached_global])), dim=1)
        local_emb, global_emb = embedded.chunk(2)
        return contrastive_loss(local_emb, global_emb, local.shape[0], self.hp.cr_T)

    def step_loss(self, step: GeneratorStep, loss: torch.Tensor) -> None:
        """The step's features are kept alongside the images keep-best keeps."""
        if self._step_features is not None and self.hp.keep_best:
            self._kept.update(loss, self._step_features)

    def end_synthesis(self) -> None:
        """The banked iterate's (local, global) features (keep-best's, else the last step's) join the bank,
        every rank's (in rank order, as the images are banked)."""
        features = self._kept.images if self.hp.keep_best else self._step_features
        if features is not None:
            self.bank.add(self.ctx.group.all_gather_rows(features, self.round.images))
        self._kept = BestIterate()
        self._step_features = None

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "head": self.head.state_dict(),
                "head_optimizer": self.head_optimizer.state_dict(), "bank": self.bank.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank.load_state_dict(state["bank"])
