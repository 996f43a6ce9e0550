"""Writes tests/parity/polo5_zskt.pt: the inputs of ZSKT's student-loss parity test against the authors'
code (polo5/ZeroShotKnowledgeTransfer `ZeroShotKTSolver.KT_loss_student`): student and teacher logits
of 8 images over 10 classes, and their block activations at three spatial sizes (what the reference's
WRN returns after its logits, and what `BlockOutputs` keeps: each resolution's last block output).
Deterministic. Usage: `python tests/parity/make_polo5_zskt.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
IMAGES, CLASSES = 8, 10
BLOCKS = ((8, 16), (16, 8), (32, 4))  # (channels, side) of block1-3 of a WRN at 16 px (tiny)


def build() -> dict[str, Any]:
    """Logits and activations; the student's activations are the teacher's plus noise, so the
    attention maps differ a little, as a student's do."""
    rng = torch.Generator().manual_seed(7)
    teacher = [torch.randn(IMAGES, c, s, s, generator=rng).relu() for c, s in BLOCKS]
    student = [t + 0.5 * torch.randn(t.shape, generator=rng) for t in teacher]
    return dict(t_logits=3 * torch.randn(IMAGES, CLASSES, generator=rng),
                s_logits=3 * torch.randn(IMAGES, CLASSES, generator=rng),
                t_activations=teacher, s_activations=student, beta=250.0, temperature=1.0)


if __name__ == "__main__":
    torch.save(build(), HERE / "polo5_zskt.pt")
    print(f"wrote {HERE / 'polo5_zskt.pt'}")
