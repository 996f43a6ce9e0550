"""CIFAR-10 and CIFAR-100 from torchvision's python-pickle batches (the official release format)."""

from __future__ import annotations

import pickle
import warnings
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from ..errors import UserError
from .source import ArrayDataset, DataSource, DataWarning, evenly_spaced, train_transform
from .spec import DATASETS, DatasetSpec
from .split import EvalSplit

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
TORCHVISION_CLASSES = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


def download_cifar(spec: DatasetSpec, root: str | Path) -> None:
    """Fetch the official archive with torchvision's downloader (needs a network)."""
    try:
        TORCHVISION_CLASSES[spec.name](str(root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"--download {spec.name} into {root} failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else 'no network?'}); copy the official "
                        f"{TORCHVISION_CLASSES[spec.name].base_folder} folder there instead") from exc


class CifarSource(DataSource):
    """Reads the pickled batches; the test split is already raw uint8, so it is used in memory
    (30 MB) rather than cached; files that fail the official checksums are read with a warning."""

    def __init__(self, spec: DatasetSpec, root: Path | None) -> None:
        super().__init__(spec, root)
        tv = TORCHVISION_CLASSES[spec.name]
        assert root is not None
        folder = root if root.name == tv.base_folder else root / tv.base_folder
        expected = [name for name, _ in tv.train_list + tv.test_list] + [tv.meta["filename"]]
        missing = [name for name in expected if not (folder / name).is_file()]
        if missing:
            raise UserError(f"{spec.name}: expected the python-pickle batches {', '.join(expected)} in "
                            f"{folder}; missing {', '.join(missing)} (pass --download to fetch them)")
        self.folder, self.tv = folder, tv
        bad = [name for name, md5 in tv.train_list + tv.test_list if not check_integrity(str(folder / name), md5)]
        if bad:
            warnings.warn(f"{spec.name}: {', '.join(bad)} in {folder} fail the official checksums; "
                          f"reading them anyway", DataWarning, stacklevel=3)

    def _read(self, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        images, labels = [], []
        label_key = "labels" if self.spec.name == "cifar10" else "fine_labels"
        for name in names:
            try:
                with open(self.folder / name, "rb") as fh:
                    entry = pickle.load(fh, encoding="latin1")
                images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
                labels.extend(entry[label_key])
            except (pickle.UnpicklingError, KeyError, ValueError, EOFError, TypeError) as exc:
                raise UserError(f"{self.folder / name} is not a CIFAR python-pickle batch "
                                f"({type(exc).__name__}: {str(exc)[:80]})") from exc
        y = np.asarray(labels, dtype=np.int64)
        if y.size and (y.min() < 0 or y.max() >= self.spec.num_classes):
            raise UserError(f"{self.folder}: labels range {y.min()}..{y.max()}, but {self.spec.name} has "
                            f"{self.spec.num_classes} classes; is this the other CIFAR?")
        return np.concatenate(images).transpose(0, 2, 3, 1), y

    @cached_property
    def _train(self) -> tuple[np.ndarray, np.ndarray]:
        return self._read([name for name, _ in self.tv.train_list])

    @cached_property
    def _test(self) -> tuple[np.ndarray, np.ndarray]:
        return self._read([name for name, _ in self.tv.test_list])

    def count_train(self) -> int:
        return len(self._train[1])

    def train_dataset(self) -> Dataset:
        return ArrayDataset(*self._train, transform=train_transform(self.spec))

    def test_split(self, limit: int | None = None, progress=None) -> EvalSplit:
        images, labels = self._test
        idx = evenly_spaced(len(labels), limit)
        x = torch.from_numpy(np.ascontiguousarray(images[idx].transpose(0, 3, 1, 2)))
        return EvalSplit(x, torch.from_numpy(labels[idx]))


def _names(path: str) -> tuple[str, ...]:
    return tuple((Path(__file__).parent.parent / "assets" / "class_names" / path).read_text().split())


def _register(name: str, classes: int, mean: tuple[float, ...], std: tuple[float, ...], description: str) -> None:
    spec = DatasetSpec(name=name, num_classes=classes, class_names=_names(f"{name}.txt"), input_size=32, in_chans=3,
                       mean=mean, std=std, train_size=50000, default_teacher="resnet34", default_student="resnet18",
                       needs_data_root=True, description=description, opener=CifarSource)
    DATASETS.add(name, spec, description)


_register("cifar10", 10, CIFAR_MEAN, CIFAR_STD, "CIFAR-10 (50k/10k, 32 px): torchvision's cifar-10-batches-py")
_register("cifar100", 100, CIFAR100_MEAN, CIFAR100_STD, "CIFAR-100 (50k/10k, 32 px): torchvision's cifar-100-python")
