"""The run options: `RunConfig`, everything that defines one run, and the hash that names it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class RunConfig:
    """Everything that defines one run; `run_id` hashes its resolved form."""

    method: str
    dataset: str = "digits"
    ratio: float = 0.1
    teacher: str | None = None
    student: str | None = None
    resolution: int | None = None
    resolutions: tuple[int, ...] | None = None
    seed: int = 0
    device: str = "auto"
    data_root: str | None = None
    teacher_checkpoint: str | None = None
    label_embeddings: str | None = None
    classes: str | None = None          # file of ImageNet wnids: run on that class subset
    teacher_weights: str | None = None  # torchvision weight set, e.g. IMAGENET1K_V1
    smoke: bool = False                 # a handful of steps per phase: checks a setup end to end
    protocol: str = "equal"             # budget protocol: equal (the suite's) or paper (the reference's)
    amp: str = "auto"                   # bf16 autocast: auto (on CUDA only), bf16 (also on the CPU), off (fp32)
    time_budget: float | None = None    # seconds of synthesis + KD; the ratio is then a cap on the images
    bank_gpu_gb: float | None = None    # GiB the uint8 bank may take on the GPU before the host tier takes over
    compile: bool = False               # torch.compile teacher, student and generator
    auto_batch: bool = False            # after an out-of-memory error, retry at half the batch sizes
    overrides: dict[str, str] = field(default_factory=dict)


def stable_hash(payload: dict[str, Any], length: int = 10) -> str:
    """Short sha256 of a JSON-serialisable mapping with sorted keys."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
