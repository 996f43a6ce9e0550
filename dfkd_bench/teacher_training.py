"""Training a teacher from scratch on a dataset's real training split: the recipe by dataset, the
shuffled uint8 batches, SGD with a cosine, a smoke mode of a few steps."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import DatasetSpec, DataSource
from .engine.augment import Normalize, random_crop, random_flip
from .errors import UserError
from .models import create_model


@dataclass
class TeacherRecipe:
    """How a teacher is trained on the real split: SGD with momentum and weight decay, cosine schedule
    (one-cycle for the tiny digits teacher), the dataset's standard augmentation."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    nesterov: bool = False
    crop_padding: int = 4
    max_steps_per_epoch: int = 0  # 0: the whole split every epoch (a smoke check sets a handful)


RECIPES: dict[str, dict[str, Any]] = {
    "digits": dict(epochs=30, batch_size=64, lr=0.05, schedule="onecycle", nesterov=True, crop_padding=2),
    "imagenet": dict(epochs=90, batch_size=256, lr=0.1, weight_decay=1e-4),
}


SMOKE_RECIPE = dict(epochs=1, batch_size=16, max_steps_per_epoch=3)


def recipe_for(spec: DatasetSpec, smoke: bool = False, **overrides: Any) -> TeacherRecipe:
    """The dataset's standard recipe (CIFAR's for 32/64 px, torchvision's for ImageNet sizes), shrunk
    to a few steps for a smoke check, then explicit overrides."""
    preset = next((RECIPES[name] for name in spec.preset_names if name in RECIPES), {})
    recipe = TeacherRecipe(**{**preset, **(SMOKE_RECIPE if smoke else {}), **overrides})
    if recipe.epochs <= 0:
        raise UserError(f"--epochs must be > 0, got {recipe.epochs}")
    return recipe


StepHook = Callable[[int, int], None]


EpochHook = Callable[[int, int, float], None]


def _batches(spec: DatasetSpec, source: DataSource, recipe: TeacherRecipe, seed: int, device: torch.device,
             generator: torch.Generator):
    """One epoch of augmented float [0,1] batches on the device: in-memory data is cropped and flipped
    on the device; data on disk streams through the DataLoader's workers (uint8, converted here)."""
    in_memory = source.in_memory_train()
    if in_memory is not None:
        x_train, y_train = in_memory[0].to(device), in_memory[1].to(device)

        def epoch(index: int):
            order = torch.randperm(x_train.shape[0], generator=generator).to(device)
            for start in range(0, order.numel(), recipe.batch_size):
                idx = order[start:start + recipe.batch_size]
                x = random_crop(x_train[idx], recipe.crop_padding)
                yield (random_flip(x) if spec.hflip else x), y_train[idx]
        return epoch, math.ceil(x_train.shape[0] / recipe.batch_size)
    loader = source.train_loader(recipe.batch_size, seed, pin_memory=device.type == "cuda")

    def stream(index: int):
        for images, labels in loader:
            yield images.to(device, non_blocking=True).float().div_(255), labels.to(device, non_blocking=True)
    return stream, len(loader)


def train_teacher(spec: DatasetSpec, arch: str, source: DataSource, recipe: TeacherRecipe, seed: int,
                  device: torch.device, on_step: StepHook | None = None,
                  on_epoch: EpochHook | None = None) -> nn.Module:
    """Train `arch` on the real training split; the test split is only read after the last epoch."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = create_model(arch, spec.num_classes, spec.in_chans).to(device)
    cuda = device.type == "cuda"
    if cuda:
        model = model.to(memory_format=torch.channels_last)
    norm = Normalize(spec.mean, spec.std).to(device)
    epoch_batches, per_epoch = _batches(spec, source, recipe, seed, device, gen)
    if per_epoch == 0:
        raise UserError(f"{spec.name}: {source.train_size} train images make no batch of {recipe.batch_size}")
    steps_per_epoch = min(per_epoch, recipe.max_steps_per_epoch or per_epoch)
    total = recipe.epochs * steps_per_epoch
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    if recipe.schedule == "onecycle":
        sched: Any = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total, pct_start=0.15)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    model.train()
    done = 0
    for epoch in range(recipe.epochs):
        running = torch.zeros((), device=device)
        for step, (x, y) in enumerate(epoch_batches(epoch)):
            if step >= steps_per_epoch:
                break
            x = norm(x)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(model(x.contiguous(memory_format=torch.channels_last) if cuda else x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach()
            done += 1
            if on_step:
                on_step(done, total)
        if on_epoch:
            on_epoch(epoch + 1, recipe.epochs, running.item() / steps_per_epoch)
    model.eval()
    return model
