"""Teacher-guided noise: a complete DFKD method in one file.

Each round starts from random pixels and takes a few Adam steps on them so that the teacher
assigns each image its target label (cross-entropy through the teacher only: no generator, no
BatchNorm statistics). The engine does the rest, as for the built-in methods: it banks the images,
distils the student on them with the default KD loss, evaluates, times and checkpoints.
It is a weak baseline (without the teacher's BatchNorm statistics the images stay close to
adversarial noise), far below the built-in methods: a floor to compare against.

    dfkd-bench run --plugin example_plugin.py --methods teacher_noise --ratio 0.05
    dfkd-bench run --plugin example_plugin.py --methods teacher_noise --set teacher_noise.steps=20
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from dfkd_bench.api import Method, MethodHparams, RoundInfo, SyntheticBatch, random_labels, register_method


@dataclass
class TeacherNoiseHparams(MethodHparams):
    """The shared student recipe (batch sizes, KD steps, lr, temperature...) plus this method's knobs;
    each field is settable with `--set teacher_noise.FIELD=VALUE`."""

    steps: int = 10        # Adam steps on the pixels per round
    lr_x: float = 0.1      # learning rate of the pixels (optimised as logits, images = sigmoid)

    # Per-dataset overrides of the defaults, applied before any --set.
    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        "digits": dict(synth_batch=64, kd_steps=40, temperature=4.0),
    }


@register_method("teacher_noise", "Teacher-guided noise: random pixels nudged toward a label by the teacher")
class TeacherNoise(Method):
    """Random images pushed toward random target labels by a few steps of teacher cross-entropy."""

    Hparams = TeacherNoiseHparams
    hp: TeacherNoiseHparams

    def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
        # The engine calls this once a round with that round's RoundInfo (index, warm-up, ...);
        # None means a standalone call (a notebook, a test). This method is the same every round.
        ctx, hp = self.ctx, self.hp
        # Draw everything from the run's generator: runs are then reproducible and resumable.
        labels = random_labels(n, ctx.spec.num_classes, ctx.generator, ctx.device)
        shape = (n, ctx.spec.in_chans, ctx.resolution, ctx.resolution)
        pixels = torch.randn(shape, generator=ctx.generator, device=ctx.generator.device).to(ctx.device)
        pixels.requires_grad_(True)
        optimizer = torch.optim.Adam([pixels], lr=hp.lr_x)
        loss = None
        for _ in range(hp.steps):
            images = torch.sigmoid(pixels)                 # always a valid image in [0, 1]
            with ctx.autocast():                           # bf16 on CUDA, a no-op on CPU
                logits = ctx.teacher(self.model_input(images)).float()  # resized + normalised
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()                                # the teacher is frozen: only pixels move
            optimizer.step()
        # Images in [0, 1] at the method's native resolution, their labels, and the last loss
        # (left on the device: the engine reads it once a round, and records a run as diverged
        # if an image or this loss is not finite).
        return SyntheticBatch(torch.sigmoid(pixels).detach(), labels, None if loss is None else loss.detach())
