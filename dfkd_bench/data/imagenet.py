"""ImageNet-1K, its class subsets (Imagenette, ImageNet-100) and Tiny-ImageNet as registered datasets."""

from __future__ import annotations

from pathlib import Path

from .folders import ImageFolderSource, TinyImageNetSource
from .imagenet_classes import IMAGENETTE_WNIDS, imagenet100_wnids, imagenet_wnids
from .spec import DATASETS, DatasetSpec

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_MEAN = (0.4802, 0.4481, 0.3975)
TINY_STD = (0.2302, 0.2265, 0.2262)


def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 category names shipped with the label embeddings (torchvision's, with index 264
    spelt "Cardigan Welsh corgi" so it differs from 474 "cardigan"), in sorted-wnid order."""
    path = Path(__file__).parent.parent / "assets" / "class_names" / "imagenet.txt"
    return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())


def imagenet_subset(name: str, wnids: tuple[str, ...], train_size: int, description: str) -> DatasetSpec:
    """An ImageNet-layout dataset over `wnids` (read from a full ImageNet folder or one holding only
    these classes); a 1000-class teacher is restricted to them, and presets fall back to ImageNet's."""
    universe = imagenet_wnids()
    names = imagenet_class_names()
    return DatasetSpec(name=name, num_classes=len(wnids), class_names=tuple(names[universe.index(w)] for w in wnids),
                       input_size=224, in_chans=3, mean=IMAGENET_MEAN, std=IMAGENET_STD, train_size=train_size,
                       default_teacher="tv_resnet34", default_student="tv_resnet18", needs_data_root=True,
                       description=description, presets=() if name == "imagenet" else ("imagenet",), wnids=wnids,
                       eval_resize=256, opener=ImageFolderSource)


def _register() -> None:
    specs = [
        imagenet_subset("imagenet", imagenet_wnids(), 1281167,
                        "ImageNet-1K (1.28M/50k, 224 px): ROOT/train/<wnid>/, ROOT/val/<wnid>/"),
        imagenet_subset("imagenette", IMAGENETTE_WNIDS, 9469,
                        "Imagenette: fast.ai's 10 ImageNet classes (ImageNet layout, 224 px)"),
        imagenet_subset("imagenet100", imagenet100_wnids(), 126689,
                        "ImageNet-100: the 100 classes of CMC (ImageNet layout, 224 px)"),
        # Presets: NAYER's Tiny-ImageNet one; methods that published none there (Fast, DeepInversion)
        # take their CIFAR-100 settings, as the papers comparing on Tiny-ImageNet ran them.
        DatasetSpec(name="tiny-imagenet", num_classes=200, class_names=(), input_size=64, in_chans=3,
                    mean=TINY_MEAN, std=TINY_STD, train_size=100000, default_teacher="resnet34",
                    default_student="resnet18", needs_data_root=True, presets=("tinyimagenet", "cifar100"),
                    description="Tiny-ImageNet (200 classes, 100k/10k, 64 px): the tiny-imagenet-200 folder",
                    opener=TinyImageNetSource),
    ]
    for spec in specs:
        DATASETS.add(spec.name, spec, spec.description)


_register()
