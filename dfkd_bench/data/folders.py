"""JPEG-folder datasets: ImageNet (ImageFolder layout) with its class subsets, and Tiny-ImageNet."""

from __future__ import annotations

import os
import warnings
from functools import cached_property
from pathlib import Path

from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

from ..errors import UserError
from .imagenet_classes import FOLDER_ALIASES
from .source import DataSource, DataWarning, FileListDataset, eval_transform, train_transform
from .spec import DatasetSpec

Samples = list[tuple[str, int]]


def _subfolders(path: Path) -> set[str]:
    with os.scandir(path) as entries:
        return {e.name for e in entries if e.is_dir()}


def class_folders(folder: Path, wnids: tuple[str, ...]) -> list[str]:
    """The folder name of each class: its wnid, or a known alias when only the alias exists. The warning
    names the dataset's root, not the split, so that the CLI says it once for train/ and val/ alike."""
    present = _subfolders(folder) if folder.is_dir() else set()
    names = []
    for wnid in wnids:
        alias = FOLDER_ALIASES.get(wnid)
        use_alias = wnid not in present and alias in present and alias not in wnids
        if use_alias:
            warnings.warn(f"{folder.parent}: no folder {wnid}; reading {alias} for that class (a known alias)",
                          DataWarning, stacklevel=2)
        names.append(alias if use_alias else wnid)
    return names


def _samples(folder: Path, wnids: tuple[str, ...]) -> Samples:
    """Image files under folder/<wnid>/ (any depth), labelled by the wnid's position."""
    return make_dataset(str(folder), {name: i for i, name in enumerate(class_folders(folder, wnids))},
                        extensions=IMG_EXTENSIONS, allow_empty=True)


def _check_class_folders(spec: DatasetSpec, folder: Path, wnids: tuple[str, ...]) -> None:
    present = _subfolders(folder)
    missing = [w for w, name in zip(wnids, class_folders(folder, wnids)) if name not in present]
    if missing:
        raise UserError(f"{spec.name}: expected {len(wnids)} class folders named by wnid under {folder}; found "
                        f"{len(wnids) - len(missing)} of them ({len(present)} folders in all), missing "
                        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")


class ImageFolderSource(DataSource):
    """ImageNet layout: ROOT/train/<wnid>/*.JPEG and ROOT/val/<wnid>/*.JPEG. The spec's wnids choose
    the classes (all 1000, or a subset read from the same folder), in sorted-wnid order for ImageNet,
    so torchvision's class indices line up. train/ is optional: it is only read to count the budget
    and to train a teacher."""

    def __init__(self, spec: DatasetSpec, root: Path | None) -> None:
        super().__init__(spec, root)
        assert root is not None
        self.val_dir, self.train_dir = root / "val", root / "train"
        if not self.val_dir.is_dir():
            raise UserError(f"{spec.name}: expected ImageNet's layout under {root}: val/<wnid>/*.JPEG (the test "
                            f"split) and train/<wnid>/*.JPEG; there is no val/ folder")
        _check_class_folders(spec, self.val_dir, spec.wnids)
        if self.train_dir.is_dir():
            _check_class_folders(spec, self.train_dir, spec.wnids)

    @cached_property
    def _train_samples(self) -> Samples:
        if not self.train_dir.is_dir():
            raise UserError(f"{self.spec.name}: training a teacher needs {self.train_dir}/<wnid>/*.JPEG; "
                            f"there is no train/ folder")
        return _samples(self.train_dir, self.spec.wnids)

    def count_train(self) -> int | None:
        return len(self._train_samples) if self.train_dir.is_dir() else None

    def train_dataset(self) -> Dataset:
        return FileListDataset(self._train_samples, train_transform(self.spec))

    def test_dataset(self) -> Dataset:
        samples = _samples(self.val_dir, self.spec.wnids)
        if not samples:
            raise UserError(f"{self.spec.name}: no images under {self.val_dir}/<wnid>/")
        return FileListDataset(samples, eval_transform(self.spec))


TINY_FOLDER = "tiny-imagenet-200"
TINY_FILES = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")


class TinyImageNetSource(DataSource):
    """The standard tiny-imagenet-200 folder: wnids.txt, words.txt, train/<wnid>/images/*.JPEG,
    val/images/*.JPEG labelled by val/val_annotations.txt. Classes are the sorted wnids."""

    def __init__(self, spec: DatasetSpec, root: Path | None) -> None:
        super().__init__(spec, root)
        assert root is not None
        folder = root if (root / "wnids.txt").is_file() or not (root / TINY_FOLDER).is_dir() else root / TINY_FOLDER
        missing = [name for name in TINY_FILES if not (folder / name).exists()]
        if missing:
            raise UserError(f"{spec.name}: expected {', '.join(TINY_FILES)} in {folder} (the tiny-imagenet-200 "
                            f"folder); missing {', '.join(missing)}")
        self.folder = folder
        wnids = tuple(sorted(line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()))
        if len(wnids) != spec.num_classes or len(set(wnids)) != len(wnids):
            raise UserError(f"{spec.name}: {folder / 'wnids.txt'} lists {len(set(wnids))} classes, expected "
                            f"{spec.num_classes}")
        _check_class_folders(spec, folder / "train", wnids)
        self._wnids = wnids

    @property
    def wnids(self) -> tuple[str, ...]:
        return self._wnids

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        """First synonym of each class from words.txt (wnid TAB descriptions)."""
        words = {}
        for line in (self.folder / "words.txt").read_text().splitlines():
            wnid, _, text = line.partition("\t")
            words[wnid.strip()] = text.split(",")[0].strip()
        return tuple(words.get(w, w) for w in self._wnids)

    @cached_property
    def _train_samples(self) -> Samples:
        return _samples(self.folder / "train", self._wnids)

    def count_train(self) -> int:
        return len(self._train_samples)

    def train_dataset(self) -> Dataset:
        return FileListDataset(self._train_samples, train_transform(self.spec))

    def test_dataset(self) -> Dataset:
        index = {w: i for i, w in enumerate(self._wnids)}
        samples: Samples = []
        annotations = self.folder / "val" / "val_annotations.txt"
        for number, line in enumerate(annotations.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split("\t")
            if len(parts) < 2 or parts[1] not in index:
                raise UserError(f"{annotations}:{number}: expected 'FILE<TAB>WNID...' with a wnid from wnids.txt, "
                                f"got {line[:60]!r}")
            samples.append((str(self.folder / "val" / "images" / parts[0]), index[parts[1]]))
        return FileListDataset(samples, eval_transform(self.spec))
