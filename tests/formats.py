"""Writers of tiny datasets in the real on-disk formats, so loaders are tested against what users download.

CIFAR-10/100 are written as the official python pickles (Python 2 protocol-2 files whose strings load as
``str`` with ``encoding="latin1"``, torchvision's way, and as ``bytes`` with ``encoding="bytes"``, the
dataset page's way); Tiny-ImageNet and ImageNet as their folder layouts with JPEGs, including the odd
images the real sets hold (grayscale, CMYK, a PNG named .JPEG).  Images are deterministic and
class-dependent (a class-coloured stripe pattern plus noise), so a tiny model can learn something.
"""

from __future__ import annotations

import colorsys
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from dfkd_bench.data.imagenet_classes import IMAGENETTE_WNIDS, imagenet_descriptions
from dfkd_bench.label_embeddings import shipped_class_names

__all__ = [
    "CIFAR100_COARSE_NAMES",
    "CIFAR100_COARSE_OF_FINE",
    "DEFAULT_WNIDS",
    "class_image",
    "write_cifar10",
    "write_cifar100",
    "write_imagenet_folder",
    "write_tiny_imagenet",
]

DEFAULT_WNIDS: tuple[str, ...] = IMAGENETTE_WNIDS[:4]

CIFAR100_COARSE_NAMES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)
# The superclass of each of CIFAR-100's fine classes (the dataset's real hierarchy).
CIFAR100_COARSE_OF_FINE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3, 3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15, 0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10, 16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19, 2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19, 18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)
# Synsets in the real words.txt that are none of Tiny-ImageNet's classes (it lists all of WordNet).
_EXTRA_WORDS = {"n00001740": "entity", "n00001930": "physical entity", "n00002137": "abstraction, abstract entity"}
_SPLIT_SEEDS = {"train": 0, "test": 1, "val": 2}
_RECONSTRUCT = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder, numpy.core.multiarray._reconstruct in Python 2


def class_image(label: int, num_classes: int, index: int, height: int, width: int, split: str = "train") -> np.ndarray:
    """A deterministic (height, width, 3) uint8 image of class ``label``: stripes whose colour, angle and
    frequency depend on the class, with a per-image phase and noise, so classes are learnable but not trivial."""
    rng = np.random.default_rng([_SPLIT_SEEDS[split], label, index])
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    angle = np.pi * ((label * 0.618034) % 1.0)
    freq = 1.5 + label % 4
    wave = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 2 * np.pi))
    colour = np.array(colorsys.hsv_to_rgb(label / max(num_classes, 1), 0.8, 0.95)) * 255.0
    image = (0.3 + 0.7 * wave)[..., None] * colour + rng.normal(0.0, 18.0, (height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _save_image(path: Path, array: np.ndarray, mode: str = "RGB", fmt: str = "JPEG") -> None:
    """Save an RGB array as ``path`` in ``mode`` ("RGB", "L" or "CMYK") and file format ``fmt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(array, "RGB")
    options = {"quality": 90} if fmt == "JPEG" else {}
    (image if mode == "RGB" else image.convert(mode)).save(path, format=fmt, **options)


def _interleaved(num_classes: int, per_class: int, split: str) -> list[tuple[int, int]]:
    """(label, index within the class) of every image of a split, classes mixed in a fixed order as the
    real splits store them."""
    items = [(label, i) for label in range(num_classes) for i in range(per_class)]
    return [items[j] for j in np.random.default_rng(_SPLIT_SEEDS[split]).permutation(len(items))]


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle did: ``bytes`` become Python 2 ``str`` (BINSTRING) and numpy arrays
    name ``numpy.core.multiarray._reconstruct``, exactly like the files on the CIFAR page."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        if obj is _RECONSTRUCT:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _dump_py2(obj: object, path: Path) -> None:
    """Write ``obj`` as a Python 2 protocol-2 pickle."""
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def _cifar_split(num_classes: int, per_class: int, split: str) -> tuple[np.ndarray, list[int]]:
    """(N, 3072) uint8 rows (R, G, B planes, each 32x32 row-major) and labels, classes interleaved."""
    items = _interleaved(num_classes, per_class, split)
    rows = np.empty((len(items), 3072), dtype=np.uint8)
    for n, (label, i) in enumerate(items):
        rows[n] = class_image(label, num_classes, i, 32, 32, split).transpose(2, 0, 1).reshape(-1)
    return rows, [label for label, _ in items]


def _filenames(names: Sequence[str], labels: Sequence[int], start: int) -> list[bytes]:
    return [f"{names[label]}_s_{start + k:06d}.png".encode() for k, label in enumerate(labels)]


def write_cifar10(root: str | Path, per_class: int = 3, test_per_class: int = 2) -> Path:
    """Write ``root/cifar-10-batches-py`` (data_batch_1..5, test_batch, batches.meta) as the official pickles;
    return that folder.  ``per_class`` training images per class are spread over the five batches."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    names = shipped_class_names("cifar10")
    data, labels = _cifar_split(10, per_class, "train")
    batches = np.array_split(np.arange(len(labels)), 5)
    start = 0
    for b, idx in enumerate(batches, start=1):
        batch_labels = [labels[i] for i in idx]
        _dump_py2({b"batch_label": f"training batch {b} of 5".encode(), b"labels": batch_labels,
                   b"data": data[idx], b"filenames": _filenames(names, batch_labels, start)},
                  folder / f"data_batch_{b}")
        start += len(idx)
    test_data, test_labels = _cifar_split(10, test_per_class, "test")
    _dump_py2({b"batch_label": b"testing batch 1 of 1", b"labels": test_labels, b"data": test_data,
               b"filenames": _filenames(names, test_labels, 0)}, folder / "test_batch")
    _dump_py2({b"num_cases_per_batch": len(batches[0]),
               b"label_names": [n.encode() for n in names], b"num_vis": 3072}, folder / "batches.meta")
    return folder


def write_cifar100(root: str | Path, per_class: int = 3, test_per_class: int = 2) -> Path:
    """Write ``root/cifar-100-python`` (train, test, meta) as the official pickles, with fine and coarse
    labels; return that folder."""
    folder = Path(root) / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    names = shipped_class_names("cifar100")
    for split, count, title in (("train", per_class, b"training batch 1 of 1"),
                                ("test", test_per_class, b"testing batch 1 of 1")):
        data, labels = _cifar_split(100, count, split)
        _dump_py2({b"filenames": _filenames(names, labels, 0), b"batch_label": title, b"fine_labels": labels,
                   b"coarse_labels": [CIFAR100_COARSE_OF_FINE[label] for label in labels], b"data": data},
                  folder / split)
    _dump_py2({b"fine_label_names": [n.encode() for n in names],
               b"coarse_label_names": [n.encode() for n in CIFAR100_COARSE_NAMES]}, folder / "meta")
    return folder


def _description(wnid: str) -> str:
    return imagenet_descriptions().get(wnid, f"synthetic class {wnid}")


def write_tiny_imagenet(root: str | Path, wnids: Sequence[str] = DEFAULT_WNIDS, per_class: int = 3,
                        val_per_class: int = 2, test_images: int = 2) -> Path:
    """Write ``root/tiny-imagenet-200`` in the layout of the official zip (64x64 JPEGs, one grayscale,
    words.txt listing more synsets than the classes, val labels in val_annotations.txt); return that folder."""
    folder = Path(root) / "tiny-imagenet-200"
    folder.mkdir(parents=True, exist_ok=True)
    k = len(wnids)
    (folder / "wnids.txt").write_text("".join(f"{w}\n" for w in wnids))
    words = {**_EXTRA_WORDS, **{w: _description(w) for w in wnids}}
    (folder / "words.txt").write_text("".join(f"{w}\t{words[w]}\n" for w in sorted(words)))
    for label, wnid in enumerate(wnids):
        boxes = []
        for i in range(per_class):
            name = f"{wnid}_{i}.JPEG"
            mode = "L" if (label, i) == (0, 1) else "RGB"
            _save_image(folder / "train" / wnid / "images" / name, class_image(label, k, i, 64, 64), mode)
            boxes.append(f"{name}\t{i % 8}\t{2 + i % 5}\t{63 - i % 7}\t{60 - i % 3}\n")
        (folder / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
    annotations = []
    for n, (label, i) in enumerate(_interleaved(k, val_per_class, "val")):
        _save_image(folder / "val" / "images" / f"val_{n}.JPEG", class_image(label, k, i, 64, 64, "val"))
        annotations.append(f"val_{n}.JPEG\t{wnids[label]}\t{n % 9}\t{n % 13}\t{50 + n % 14}\t{48 + n % 16}\n")
    (folder / "val" / "val_annotations.txt").write_text("".join(annotations))
    for n in range(test_images):
        _save_image(folder / "test" / "images" / f"test_{n}.JPEG", class_image(n % k, k, n, 64, 64, "test"))
    return folder


def write_imagenet_folder(root: str | Path, wnids: Sequence[str] = DEFAULT_WNIDS, per_class: int = 3,
                          val_per_class: int = 2, size: tuple[int, int] = (80, 64)) -> Path:
    """Write an ImageFolder tree ``root/train/<wnid>/<wnid>_<i>.JPEG`` and ``root/val/<wnid>/ILSVRC2012_val_<k>.JPEG``
    and return ``root``.  ``size`` is (width, height) and every other image is turned upright, so
    resize+crop sees both orientations; as in the real set, some images are grayscale, one training
    image is CMYK and one is a PNG under a .JPEG name (ImageNet's n02105855_2933.JPEG)."""
    root = Path(root)
    k = len(wnids)
    odd = {(k - 1, 0): ("CMYK", "JPEG"), (0, per_class - 1): ("RGB", "PNG")} if per_class > 1 else {}
    for label, wnid in enumerate(wnids):
        for i in range(per_class):
            width, height = size if i % 2 == 0 else size[::-1]
            mode, fmt = odd.get((label, i), ("L" if (label * per_class + i) % 4 == 3 else "RGB", "JPEG"))
            _save_image(root / "train" / wnid / f"{wnid}_{i}.JPEG", class_image(label, k, i, height, width), mode, fmt)
    for n, (label, i) in enumerate(_interleaved(k, val_per_class, "val"), start=1):
        width, height = size if n % 2 else size[::-1]
        image = class_image(label, k, i, height, width, "val")
        _save_image(root / "val" / wnids[label] / f"ILSVRC2012_val_{n:08d}.JPEG", image, "L" if n == 1 else "RGB")
    return root
