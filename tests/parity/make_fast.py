"""Writes tests/parity/fast.pt: the shared weights and inputs of Fast's reference-parity test.

A CIFAR-style ResNet-8 teacher and student (our zoo's `resnet8`, the same layers as the reference's
`resnet_tiny.resnet8`), Fast's CIFAR generator at a tiny width, two rounds of latents and sorted
labels, and one uint8 batch for the student step. Deterministic: run it again and the tensors are
equal. Usage: `python tests/parity/make_fast.py`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from dfkd_bench.data import get_dataset
from dfkd_bench.engine import LatentGenerator
from dfkd_bench.models import create_model

HERE = Path(__file__).resolve().parent
ARCH, DATASET, RESOLUTION = "resnet8", "cifar10", 32
# Fast-Datafree scripts/fast_cifar.sh, the Fast-2 line: --g_steps 2 --lr_g 5e-3 --lr_z 0.015 --adv 1.33
# --bn 10.0 --oh 0.5 --bn_mmt 0.9 --T 20 --lr 0.2 --is_maml 1 (weight decay 1e-4: datafree_kd.py's default);
# the widths, batches and rounds are ours (tiny).
HPARAMS: dict[str, Any] = dict(g_steps=2, lr_g=5e-3, lr_z=0.015, adv=1.33, bn=10.0, oh=0.5, bn_momentum=0.9,
                               temperature=20.0, lr=0.2, weight_decay=1e-4, nz=16, ngf=8, synth_batch=16, rounds=2)


def calibrated_batchnorm(model: nn.Module, inputs: torch.Tensor, generator: torch.Generator) -> nn.Module:
    """Random affine BatchNorm weights, and running statistics measured on `inputs` (a trained look)."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=generator))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=generator))
                m.momentum = None  # a cumulative average: the statistics of `inputs`
                m.reset_running_stats()
        model.train()(inputs)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.momentum = 0.1
    return model.eval()


def centred_classifier(model: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Rescale the classifier to standardised penultimate features of `inputs`, so its argmax varies
    from image to image (a random network otherwise predicts one class for everything)."""
    features: list[torch.Tensor] = []
    hook = model.classifier.register_forward_pre_hook(lambda _, args: features.append(args[0]))
    with torch.no_grad():
        model(inputs)
        hook.remove()
        mu, sd = features[0].mean(0), features[0].std(0) + 1e-3
        weight = model.classifier.weight / sd
        model.classifier.weight.copy_(weight)
        model.classifier.bias.copy_(-(weight @ mu))
    return model


def teacher_and_student(num_classes: int, inputs: torch.Tensor, seed: int) -> tuple[nn.Module, nn.Module]:
    """A ResNet-8 teacher and a student that is the teacher with noise on every weight, both calibrated on
    `inputs` (normalised images like the generator's), so they agree on some images and not on others
    (the adversarial term's mask has both values)."""
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = centred_classifier(calibrated_batchnorm(create_model(ARCH, num_classes), inputs, rng), inputs)
    student = create_model(ARCH, num_classes)
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=rng))
    return teacher, centred_classifier(student.eval(), inputs)


def common_inputs(generated: torch.Tensor, seed: int, kd_batch: int) -> dict[str, Any]:
    """The models (calibrated on the generator's `generated` images), the dataset's normalisation and one
    uint8 student batch with labels."""
    spec = get_dataset(DATASET)
    num_classes = spec.num_classes
    normalised = (generated - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)
    teacher, student = teacher_and_student(num_classes, normalised, seed)
    rng = torch.Generator().manual_seed(seed + 1)
    images = torch.randint(0, 256, (kd_batch, spec.in_chans, RESOLUTION, RESOLUTION), generator=rng,
                           dtype=torch.uint8)
    return dict(arch=ARCH, dataset=DATASET, num_classes=num_classes, resolution=RESOLUTION,
                mean=spec.mean, std=spec.std, teacher=teacher.state_dict(), student=student.state_dict(),
                kd_images=images, kd_labels=torch.randint(0, num_classes, (kd_batch,), generator=rng))


def build() -> dict[str, Any]:
    """Everything the Fast parity test and its reference harness load."""
    hp, spec = HPARAMS, get_dataset(DATASET)
    torch.manual_seed(2)
    generator = LatentGenerator(hp["nz"], hp["ngf"], RESOLUTION, spec.in_chans)
    state = copy.deepcopy(generator.state_dict())  # before the calibration forward moves its BN statistics
    rng = torch.Generator().manual_seed(3)
    with torch.no_grad():
        data = common_inputs(generator(torch.randn(64, hp["nz"], generator=rng)), seed=0, kd_batch=16)
    shape = (hp["rounds"], hp["synth_batch"])
    labels = torch.randint(0, spec.num_classes, shape, generator=rng).sort(dim=1).values  # the reference sorts
    return dict(data, hparams=hp, generator=state, labels=labels,
                latents=torch.randn(*shape, hp["nz"], generator=rng))


if __name__ == "__main__":
    torch.save(build(), HERE / "fast.pt")
    print(f"wrote {HERE / 'fast.pt'}")
