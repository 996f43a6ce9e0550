"""MUSE (Tran et al.): NAYER's generator at a lower (and several) resolutions, a CAM quality loss
and embedding diversity between the student and the label-text embeddings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from dfkd_bench.api import (BNStatisticsLoss, DatasetSpec, GeneratorStep, MethodContext, RoundInfo,
                            StudentStep, UserError, register_method)

from dfkd_bench.methods.nayer import Nayer, NayerHparams

FEEDS = ("upsample", "native")
SCHEDULES = ("cycle", "random")
CAM_FILLS = ("mean", "zero")


def class_activation_map(conv_map: torch.Tensor, classifier_weight: torch.Tensor, labels: torch.Tensor,
                         size: int, eps: float = 1e-8, min_peak: float = 0.01) -> torch.Tensor:
    """CAM of each image's label, ReLU(sum_k w[y,k] A_k), divided by its per-image max (so in [0,1])
    and resized (bilinear) to size x size; (N, 1, size, size), detached: the CAM is a constant mask.

    An image without positive evidence for its label gets no mask (a CAM of ones): when the peak of
    its ReLU'd map is at most `min_peak` times the largest magnitude of its raw map
    max|sum_k w[y,k] A_k|, or at most `eps`. Dividing such a map by its peak would stretch
    evidence at the level of rounding noise to 1 (a mask that is arbitrary), and an all-zero map
    would black the image out (a constant CE without gradient). The test is relative to the
    image's own map, so it does not depend on the teacher's feature scale; 1% means the strongest
    positive evidence is two orders of magnitude below the strongest (negative) evidence, i.e. the
    teacher sees the label nowhere in the image. `eps` only catches a map that is zero throughout.
    """
    weights = classifier_weight.detach().float()[labels]
    raw = torch.einsum("nk,nkhw->nhw", weights, conv_map.detach().float()).unsqueeze(1)
    cam = F.relu(raw)
    peak = cam.amax(dim=(2, 3), keepdim=True)
    empty = peak <= torch.clamp(min_peak * raw.abs().amax(dim=(2, 3), keepdim=True), min=eps)
    cam = torch.where(empty, torch.ones_like(cam), cam / torch.where(empty, torch.ones_like(peak), peak))
    return F.interpolate(cam, size=(size, size), mode="bilinear", align_corners=False)


def cam_masked(images: torch.Tensor, cam: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Blend [0,1] images toward `fill` where the CAM is low: fill + CAM * (images - fill).

    `fill`: per-channel pixel values (C,) in [0,1] (the dataset mean), or None for black (zero),
    i.e. images * CAM. Computed as CAM * images + (1 - CAM) * fill, so a CAM of ones returns the
    images exactly and a CAM of zeros the fill exactly."""
    if fill is None:
        return images * cam
    fill = fill.to(device=images.device, dtype=images.dtype).view(1, -1, 1, 1)
    return cam * images + (1 - cam) * fill


@dataclass
class MuseHparams(NayerHparams):
    """NAYER's hyper-parameters plus MUSE's switches (see `Muse` for what each one means).

    feed: "upsample" | "native"; schedule: "cycle" | "random"; cam, ed, aed: loss weights
    (0 removes the term and its extra forward passes). The paper's weights could not be read;
    cam 0.5 (as NAYER's oh), ed 1.0 and aed 0.5 are this suite's choice. Presets are NAYER's, with
    the generation resolution l = L/2 from `Muse.default_resolutions` (ImageNet: 112 of 224);
    on digits a 256-wide noisy layer; the student recipe (KD steps, batch, lr, T) stays NAYER's so
    the two compare on equal KD budgets. cam_fill: "mean" | "zero", what the CAM blends the image
    toward where it is low (the dataset mean, or black); cam_min_peak: the relative evidence below
    which an image gets no CAM mask (`class_activation_map`).
    """

    feed: str = "upsample"
    schedule: str = "cycle"
    cam: float = 0.5
    ed: float = 1.0
    aed: float = 0.5
    cam_fill: str = "mean"
    cam_min_peak: float = 0.01

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        **NayerHparams.PRESETS,
        "digits": {**NayerHparams.PRESETS["digits"], "noise_dim": 256},
    }

    def validate(self, method: str = "muse") -> None:
        super().validate(method)
        self.check_choice(method, "feed", self.feed, FEEDS)
        self.check_choice(method, "schedule", self.schedule, SCHEDULES)
        self.check_choice(method, "cam_fill", self.cam_fill, CAM_FILLS)
        if not 0 <= self.cam_min_peak < 1:
            raise UserError(f"{method}.cam_min_peak={self.cam_min_peak}: it must be in [0, 1)")


@register_method("muse", "MUSE: NAYER at lower/multiple resolutions with a CAM quality loss and embedding diversity")
class Muse(Nayer):
    """NAYER plus four switchable parts; the paper's equations could not be read, so each part is
    the interpretation below (docs: METHODS.md, MUSE).

    1. Lower resolution: by default G generates l = L/2 (`default_resolutions`) and the bank keeps
       l x l images. `feed="upsample"` resizes them (bilinear) to L before teacher and student;
       `feed="native"` shows them l x l (CNNs with global pooling accept any size).
    2. Multi-resolution: with several resolutions (`--resolutions 16,32`) each round generates at
       one of them, in turn (`schedule="cycle"`) or drawn from the run's seed (`"random"`). One
       generator serves all: shared label/noisy layers and a shared fully convolutional decoder,
       with one input head per resolution r. The decoder is NAYER's (`generator` switch): the
       CIFAR ConvStack, head Linear(noise_dim -> 2*ngf*(r/4)^2); or, at >= 112 px (ImageNet's
       l = 112), the deep one, head Linear(noise_dim -> 2*ngf*(r/16)^2): a 112 round starts at 7x7
       and a 224 round at 14x14, both through all four upsamplings of the one decoder (rather than
       14x14 with one upsampling skipped, which would leave a stage trained by 224 rounds only).
       Every layer after the noisy one then does (r/R)^2 of its work at the largest resolution R
       (a 112 round a quarter of a 224 one), so a low-resolution round costs low-resolution work.
       BN-momentum buffers: under feed="upsample" the teacher always sees L, so one buffer serves
       every resolution; under feed="native" the teacher sees each resolution as generated, whose
       BN-input statistics differ, so each resolution keeps its own buffer (`bn_losses[r]`,
       selected by the generated size through the `bn_loss_for` hook).
    3. CAM quality loss (`cam`): CAM_y from the teacher's last conv map (of the forward that gives
       the BN and CE terms) and its classifier weights, ReLU'd, divided by its per-image max,
       resized to the image; L_cam = CE(T(m + CAM_y * (x - m)), y) with the CAM a constant and x
       in [0,1] pixels: low-CAM pixels blend toward m, the dataset mean (`cam_fill="mean"`), or
       toward black, m = 0, i.e. x * CAM_y (`cam_fill="zero"`). An image whose CAM has no positive
       evidence (peak <= `cam_min_peak` x max|raw CAM|, or all zero) gets no mask, so its L_cam is
       the plain CE (`class_activation_map`). Applies in warm-up too (a quality term, not an
       adversarial one).
    4. Embedding diversity: a projection head P (student penultimate -> label-embedding space) is
       trained by the student's SGD. `ed`: L_ed = mean(1 - cos(P(S(x)), f_y)) on bank batches,
       added to the KD loss. `aed`: L_aed = mean(cos(P(S(x_new)), f_y)) on the new batch (student in
       eval mode, gradient to the generator only), in the generator loss after warm-up.
    """

    Hparams = MuseHparams
    hp: MuseHparams
    multi_resolution: ClassVar[bool] = True

    def __init__(self, ctx: MethodContext, hparams: MuseHparams) -> None:
        super().__init__(ctx, hparams)
        self.projection = nn.Linear(ctx.student.classifier.in_features, self.embeddings.shape[1]).to(ctx.device)
        # BN-momentum buffers by generated resolution (feed=native only; see the class docstring).
        self.bn_losses: dict[int, BNStatisticsLoss] = {ctx.resolutions[0]: self.bn_loss}

    @classmethod
    def default_resolutions(cls, spec: DatasetSpec) -> tuple[int, ...]:
        """Half the teacher's input size (16 of 32, 112 of 224)."""
        return (spec.input_size // 2,)

    @property
    def feed_size(self) -> int | None:
        """L under feed=upsample; None (as generated) under feed=native."""
        return self.ctx.spec.input_size if self.hp.feed == "upsample" else None

    @property
    def keeps_teacher_map(self) -> bool:
        """The CAM needs the teacher's last conv map of the synthesis forward."""
        return self.hp.cam > 0

    @property
    def needs_student_features(self) -> bool:
        """L_ed reads the student's penultimate features of each KD forward."""
        return self.hp.ed > 0

    def round_resolution(self, round: RoundInfo) -> int:
        """This round's resolution by the schedule. "random" draws on the host from the run's seed and the
        round's index: no device read, and the same pick on every rank of a process group."""
        resolutions = self.ctx.resolutions
        if len(resolutions) == 1:
            return resolutions[0]
        if self.hp.schedule == "random":
            return resolutions[int(np.random.default_rng([self.ctx.seed, round.index]).integers(len(resolutions)))]
        return resolutions[round.index % len(resolutions)]

    def bn_loss_for(self, resolution: int) -> BNStatisticsLoss:
        """Under feed=native, the BN loss of images generated at `resolution` (its own momentum buffer);
        under feed=upsample every resolution is fed at the teacher's size, so the one loss."""
        return self._bn_loss_at(resolution) if self.hp.feed == "native" else self.bn_loss

    def _bn_loss_at(self, resolution: int) -> BNStatisticsLoss:
        """The BN loss (with its momentum buffer) of images generated at `resolution`, under feed=native."""
        if resolution not in self.bn_losses:
            first = self.bn_losses[self.ctx.resolutions[0]]
            self.bn_losses[resolution] = self.keep_hook(BNStatisticsLoss(
                self.ctx.teacher, momentum=first.momentum, first_multiplier=first.first_multiplier))
        return self.bn_losses[resolution]

    def student_parameters(self) -> list[nn.Parameter]:
        """The projection head P, trained with the student."""
        return list(self.projection.parameters())

    def momentum_losses(self) -> list[BNStatisticsLoss]:
        """Every resolution's BN loss (one under feed=upsample)."""
        return list(self.bn_losses.values())

    def shared_modules(self) -> dict[str, nn.Module]:
        """NAYER's, and the projection head."""
        return {**super().shared_modules(), "projection": self.projection}

    def _embedding_cosine(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """cos(P(features), f_y) per sample."""
        return F.cosine_similarity(self.projection(features.float()), self.embeddings[labels], dim=1)

    def generator_terms(self, step: GeneratorStep) -> dict[str, torch.Tensor]:
        """NAYER's terms (under feed=native with the BN buffer of the images' resolution), L_cam, and
        after warm-up L_aed on the student's features of the adversarial forward."""
        hp = self.hp
        terms = super().generator_terms(step)
        if hp.cam > 0:
            terms["cam"] = hp.cam * self._cam_loss(step)
        if hp.aed > 0 and not self.round.in_warmup:
            features = self.student_pass(step).features
            terms["aed"] = hp.aed * self._embedding_cosine(features, step.labels).mean()
        return terms

    def _cam_loss(self, step: GeneratorStep) -> torch.Tensor:
        """CE of the teacher on the CAM-weighted view (the CAM from the step's teacher forward)."""
        teacher, view = self.teacher_pass(step), step.view
        cam = class_activation_map(teacher.conv_map, self.ctx.teacher.classifier.weight, step.labels,
                                   view.shape[-1], min_peak=self.hp.cam_min_peak)
        fill = self.ctx.normalize.mean.view(-1) if self.hp.cam_fill == "mean" else None
        with self.ctx.autocast():
            logits = self.ctx.teacher(self.model_input(cam_masked(view, cam, fill))).float()
        return F.cross_entropy(logits, step.labels)

    def student_loss(self, step: StudentStep) -> dict[str, torch.Tensor]:
        """KD plus L_ed on the batch (the features of the student forward that gave the logits)."""
        terms = super().student_loss(step)
        if self.hp.ed > 0:
            terms["ed"] = self.hp.ed * (1 - self._embedding_cosine(step.features, step.labels)).mean()
        return terms

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "projection": self.projection.state_dict(),
                "bn_losses": {r: loss.state_dict() for r, loss in self.bn_losses.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.projection.load_state_dict(state["projection"])
        for r, bn_state in state.get("bn_losses", {}).items():
            self._bn_loss_at(int(r)).load_state_dict(bn_state)
