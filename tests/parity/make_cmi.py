"""Writes tests/parity/cmi.pt: the shared weights and inputs of CMI's reference-parity test.

A tiny teacher and student with BatchNorm layers (`TinyNet`: CMI's feature is the mean of every BN
layer's input, so the projection head is D x D; a ResNet-8's D = 336 would not fit the file), the
CMI generator at a tiny width drawn as the reference's `reset_model` draws it, the head's weights, a
latent and sorted labels, 16 (local, global) feature rows for the memory bank of negatives, and one
uint8 batch for the student steps. Deterministic. Usage: `python tests/parity/make_cmi.py`.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parent))

from make_fast import calibrated_batchnorm, centred_classifier  # noqa: E402

from dfkd_bench.data import get_dataset  # noqa: E402
from dfkd_bench.engine import LatentGenerator  # noqa: E402
from dfkd_bench.methods.cmi import feature_modules, instance_features, instance_statistics  # noqa: E402

HERE = Path(__file__).resolve().parent
DATASET, RESOLUTION = "cifar10", 32
# zju-vipa/DataFree scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh: --adv 0.5 --bn 1.0 --oh 1.0 --cr 0.8
# --cr_T 0.1 --T 20 --lr 0.1 (weight decay 1e-4, datafree_kd.py's default); widths, batch and bank are ours (tiny).
HPARAMS: dict[str, Any] = dict(bn=1.0, oh=1.0, adv=0.5, cr=0.8, cr_T=0.1, temperature=20.0, lr=0.1,
                               weight_decay=1e-4, nz=16, ngf=8, head_dim=16, synth_batch=16, bank_size=32,
                               n_neg=4096, cr_layers="bn")


class TinyNet(nn.Module):
    """conv-BN-ReLU at 32 px, two conv-BN-ReLU at 16 px, global pooling, a linear classifier; the
    `feature_layer` / `classifier` names are the ones the suite's hooks look for."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.feature_layer = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, 1, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_layer(self.stem(x)).mean(dim=(2, 3)))


def reference_init(generator: nn.Module) -> nn.Module:
    """The reference's reset_model draw: conv/linear weights N(0, 0.02), BN weights N(1, 0.02), biases 0."""
    with torch.no_grad():
        for m in generator.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d, nn.BatchNorm2d)):
                nn.init.normal_(m.weight, 1.0 if isinstance(m, nn.BatchNorm2d) else 0.0, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
    return generator


def models(num_classes: int, inputs: torch.Tensor, seed: int) -> tuple[nn.Module, nn.Module]:
    """A calibrated teacher and a student that is a noisy copy of it (they agree on some images only)."""
    rng = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    teacher = centred_classifier(calibrated_batchnorm(TinyNet(num_classes), inputs, rng), inputs)
    student = TinyNet(num_classes)
    student.load_state_dict(teacher.state_dict())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=rng))
    return teacher, centred_classifier(student.eval(), inputs)


def bank_rows(teacher: nn.Module, images: torch.Tensor, normalise: Any) -> torch.Tensor:
    """(local, global) teacher features of earlier images, the bank's layout (local view: the mirror)."""
    stats = instance_statistics(teacher, feature_modules(teacher, HPARAMS["cr_layers"]))
    rows = []
    with torch.no_grad():
        for view in (images.flip(3), images):
            with stats.capture():
                teacher(normalise(view))
                rows.append(instance_features(stats))
    stats.close()
    return torch.cat(rows, dim=1)


def build() -> dict[str, Any]:
    """Everything the CMI parity test and its reference harness load."""
    hp, spec = HPARAMS, get_dataset(DATASET)
    mean, std = torch.tensor(spec.mean).view(1, -1, 1, 1), torch.tensor(spec.std).view(1, -1, 1, 1)
    torch.manual_seed(2)
    generator = reference_init(LatentGenerator(hp["nz"], hp["ngf"], RESOLUTION, spec.in_chans))
    rng = torch.Generator().manual_seed(3)
    state = copy.deepcopy(generator.state_dict())  # before this forward moves its BN running statistics
    with torch.no_grad():  # images like the generator's
        calibration = generator(torch.randn(96, hp["nz"], generator=rng))
    teacher, student = models(spec.num_classes, (calibration[:64] - mean) / std, seed=0)
    dim = sum(m.num_features for m in teacher.modules() if isinstance(m, nn.BatchNorm2d))
    head = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, hp["head_dim"]))
    torch.manual_seed(4)  # the reference draws z with torch.randn right after this seed (harness)
    latent = torch.randn(hp["synth_batch"], hp["nz"])
    labels = torch.randint(0, spec.num_classes, (hp["synth_batch"],), generator=rng).sort().values
    kd = 16
    return dict(dataset=DATASET, num_classes=spec.num_classes, resolution=RESOLUTION, mean=spec.mean, std=spec.std,
                hparams=hp, teacher=teacher.state_dict(), student=student.state_dict(),
                generator=state, head=head.state_dict(), latent_seed=4, latent=latent,
                labels=labels, bank=bank_rows(teacher, calibration[64:80], lambda x: (x - mean) / std),
                kd_images=(calibration[80:80 + kd] * 255).round().to(torch.uint8))


if __name__ == "__main__":
    torch.save(build(), HERE / "cmi.pt")
    print(f"wrote {HERE / 'cmi.pt'}")
