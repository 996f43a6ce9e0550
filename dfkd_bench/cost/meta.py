"""A run's method built on the meta device: untrained models whose tensors have shapes and no storage,
so a synthesis round or a student step runs through every operator (and the FLOP counter sees it)
without computing or allocating anything the size of the run's work."""

from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

import torch

from ..engine import Method, MethodContext, Normalize
from ..models import create_model

if TYPE_CHECKING:
    from ..resolve import ResolvedRun

META = torch.device("meta")
SHIPPED_EMBEDDING_WIDTH = 384  # all-MiniLM-L6-v2, the width of every label-embedding file the package ships


def embedding_shape_only(resolved: "ResolvedRun") -> torch.Tensor:
    """Zeros shaped like the run's label embeddings (its own file's width, else the shipped files'
    width): a generator's size and cost depend only on the width."""
    from ..label_embeddings import load_label_embeddings

    path = resolved.config.label_embeddings
    width = load_label_embeddings(path=path).vectors.shape[1] if path else SHIPPED_EMBEDDING_WIDTH
    return torch.zeros(resolved.spec.num_classes, width)


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """The teacher as a run holds it: eval mode, no parameter gradients (its backward computes input
    gradients only, which is what the FLOP count must see)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def meta_context(resolved: "ResolvedRun", seed: int = 0) -> MethodContext:
    """The run's context on the meta device: its teacher (frozen) and student untrained and without
    storage, fp32 (FLOPs do not depend on the precision), and a CPU random generator (meta random ops
    accept one and draw nothing)."""
    spec = resolved.spec
    with META:
        teacher = frozen(create_model(resolved.teacher, spec.num_classes, spec.in_chans))
        student = create_model(resolved.student, spec.num_classes, spec.in_chans)
        normalize = Normalize(spec.mean, spec.std)
    return MethodContext(teacher=teacher, student=student, spec=spec, device=META,
                         generator=torch.Generator().manual_seed(seed), resolutions=tuple(resolved.resolutions),
                         normalize=normalize, label_embeddings_loader=lambda: embedding_shape_only(resolved),
                         seed=seed)


@contextmanager
def meta_method(resolved: "ResolvedRun") -> Iterator[Method]:
    """The run's method (at its batch sizes) built on the meta device; closed on exit."""
    ctx = meta_context(resolved, resolved.config.seed)
    with META:
        method = resolved.method_cls(ctx, resolved.run_hparams)
    try:
        yield method
    finally:
        method.close()
