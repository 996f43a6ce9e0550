"""Teachers: train on the real data or load a checkpoint, cached with a card under $DFKD_BENCH_CACHE."""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.spec import DatasetSpec, RealData
from .engine.augment import Normalize, random_crop, random_flip
from .engine.checkpoint import save_atomic
from .engine.evaluate import accuracy
from .errors import UserError
from .models import MODELS, create_model


@dataclass
class TeacherRecipe:
    """How a teacher is trained on the real split (SGD with momentum, cosine schedule, crop/flip)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    crop_padding: int = 2


@dataclass
class TeacherCard:
    """What is known about a cached teacher; written next to its weights as JSON."""

    dataset: str
    arch: str
    num_classes: int
    test_acc: float
    recipe: dict[str, Any]
    seed: int
    sha256: str
    train_seconds: float
    path: str


def cache_dir() -> Path:
    """$DFKD_BENCH_CACHE, default ~/.cache/dfkd-bench."""
    return Path(os.environ.get("DFKD_BENCH_CACHE", Path.home() / ".cache" / "dfkd-bench"))


def teacher_path(dataset: str, arch: str, seed: int) -> Path:
    return cache_dir() / "teachers" / dataset / f"{arch}-seed{seed}.pt"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def train_teacher(spec: DatasetSpec, arch: str, data: RealData, recipe: TeacherRecipe, seed: int,
                  device: torch.device, on_epoch: Callable[[int, int, float], None] | None = None) -> nn.Module:
    """Train `arch` on the real training split; the test split is only read after the last epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(arch, spec.num_classes, spec.in_chans).to(device)
    norm = Normalize(spec.mean, spec.std).to(device)
    x_train, y_train = data.train_x.to(device), data.train_y.to(device)
    steps_per_epoch = math.ceil(x_train.shape[0] / recipe.batch_size)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=recipe.epochs * steps_per_epoch,
                                                pct_start=0.15)
    model.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(x_train.shape[0], generator=gen).to(device)
        total = 0.0
        for start in range(0, order.numel(), recipe.batch_size):
            idx = order[start:start + recipe.batch_size]
            x = random_crop(x_train[idx], recipe.crop_padding)
            if spec.hflip:
                x = random_flip(x)
            loss = F.cross_entropy(model(norm(x)), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
        if on_epoch:
            on_epoch(epoch + 1, recipe.epochs, total / steps_per_epoch)
    model.eval()
    return model


def _card_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_teacher(model: nn.Module, card: TeacherCard, path: Path) -> TeacherCard:
    """Write weights (with arch and class count inside) and the card; returns the card with sha256."""
    save_atomic({"arch": card.arch, "dataset": card.dataset, "num_classes": card.num_classes,
                 "state_dict": model.state_dict()}, path)
    card.sha256 = file_sha256(path)
    card.path = str(path)
    _card_path(path).write_text(json.dumps(asdict(card), indent=2))
    return card


def load_teacher_checkpoint(path: str | Path, spec: DatasetSpec, arch: str, device: torch.device) -> nn.Module:
    """Load weights into `arch`; a checkpoint of another architecture or class count is refused."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"teacher checkpoint {path} does not exist")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"teacher checkpoint {path} is not a readable PyTorch file ({type(exc).__name__})") from exc
    state = blob.get("state_dict", blob) if isinstance(blob, dict) else None
    if not isinstance(state, dict):
        raise UserError(f"teacher checkpoint {path} holds no state_dict")
    saved_arch, saved_classes = blob.get("arch"), blob.get("num_classes")
    if saved_arch is not None and saved_arch != arch:
        raise UserError(f"teacher checkpoint {path} is a {saved_arch}, not the requested {arch}; "
                        f"pass --teacher {saved_arch} or another checkpoint")
    if saved_classes is not None and saved_classes != spec.num_classes:
        raise UserError(f"teacher checkpoint {path} has {saved_classes} classes but {spec.name} has "
                        f"{spec.num_classes}")
    model = create_model(arch, spec.num_classes, spec.in_chans)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
        raise UserError(f"teacher checkpoint {path} does not fit {arch} with {spec.num_classes} classes: "
                        f"{detail[:200]}") from exc
    return model.to(device).eval()


def get_teacher(spec: DatasetSpec, arch: str | None, data: RealData, device: torch.device, seed: int = 0,
                checkpoint: str | Path | None = None, recipe: TeacherRecipe | None = None,
                retrain: bool = False, log: Callable[[str], None] | None = None) -> tuple[nn.Module, TeacherCard]:
    """A frozen teacher in eval mode and its card: from `checkpoint`, the cache, or trained now and cached."""
    arch = arch or spec.default_teacher
    MODELS.get(arch)
    norm = Normalize(spec.mean, spec.std).to(device)
    test_x, test_y = data.test_x.to(device), data.test_y.to(device)
    if checkpoint is not None:
        model = load_teacher_checkpoint(checkpoint, spec, arch, device)
        card = TeacherCard(spec.name, arch, spec.num_classes, accuracy(model, test_x, test_y, norm), {}, -1,
                           file_sha256(Path(checkpoint)), 0.0, str(checkpoint))
        return _freeze(model), card
    path = teacher_path(spec.name, arch, seed)
    if path.exists() and _card_path(path).exists() and not retrain:
        card = TeacherCard(**json.loads(_card_path(path).read_text()))
        return _freeze(load_teacher_checkpoint(path, spec, arch, device)), card
    recipe = recipe or TeacherRecipe()
    if spec.needs_data_root and data.train_x.numel() == 0:
        raise UserError(f"no cached {arch} teacher for {spec.name}; pass --teacher-checkpoint FILE")
    if log:
        log(f"training teacher {arch} on {spec.name} ({recipe.epochs} epochs, seed {seed}); cached at {path}")
    start = time.perf_counter()
    def report(epoch: int, epochs: int, loss: float) -> None:
        if log and (epoch % 5 == 0 or epoch == epochs):
            log(f"  teacher epoch {epoch}/{epochs}: train loss {loss:.4f}")

    model = train_teacher(spec, arch, data, recipe, seed, device, on_epoch=report)
    seconds = time.perf_counter() - start
    card = TeacherCard(spec.name, arch, spec.num_classes, accuracy(model, test_x, test_y, norm), asdict(recipe),
                       seed, "", seconds, str(path))
    card = save_teacher(model, card, path)
    return _freeze(model), card


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
