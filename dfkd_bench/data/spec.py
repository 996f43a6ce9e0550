"""Dataset specs: what a method and the engine need to know about a dataset, and the registry."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import UserError
from ..registry import Registry

if TYPE_CHECKING:
    from .source import DataSource

DATA_ENV = "DFKD_BENCH_DATA"


@dataclass(frozen=True)
class DatasetSpec:
    """Static facts about a dataset; `open(root)` checks a data root and returns its `DataSource`.

    `presets` lists the method-preset names to try after the dataset's own (an ImageNet subset
    falls back to "imagenet"); `wnids` are ImageNet synset ids when the classes are ImageNet's,
    so a 1000-class teacher can be restricted to them; `eval_resize` is the shorter side the
    test images are resized to before the centre crop to `input_size`.
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    input_size: int
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_size: int
    default_teacher: str
    default_student: str
    hflip: bool = True
    needs_data_root: bool = False
    description: str = ""
    presets: tuple[str, ...] = ()
    wnids: tuple[str, ...] = ()
    eval_resize: int | None = None
    opener: Callable[["DatasetSpec", Path | None], "DataSource"] | None = field(default=None, repr=False,
                                                                                  compare=False)

    @property
    def preset_names(self) -> tuple[str, ...]:
        """Preset names in lookup order: the dataset's own, then its fallbacks."""
        return (self.name, *self.presets)

    def open(self, data_root: str | Path | None = None) -> "DataSource":
        """Check the data root (one-line UserError if it is missing or malformed) and return its source."""
        if self.opener is None:
            raise NotImplementedError(f"dataset {self.name} has no reader")
        root = data_root or os.environ.get(DATA_ENV) or None
        if self.needs_data_root and not root:
            raise UserError(f"dataset {self.name} needs its files: pass --data-root DIR or set ${DATA_ENV}")
        path = Path(root).expanduser() if root else None
        if path is not None and not path.is_dir():
            raise UserError(f"data root {root} for {self.name} does not exist (expected a folder)")
        return self.opener(self, path.resolve() if path else None)

    def with_classes(self, wnids: tuple[str, ...], class_names: tuple[str, ...]) -> "DatasetSpec":
        """The same dataset restricted to a class list (`--classes FILE`); it gets its own name, so
        caches and run ids never mix it with the full dataset, and falls back to the full presets."""
        if not self.wnids:
            raise UserError(f"--classes: {self.name} has no ImageNet class ids to choose from; "
                            f"use it with an ImageNet-layout dataset (imagenet, imagenette, imagenet100)")
        digest = hashlib.sha256(",".join(wnids).encode()).hexdigest()[:6]
        return replace(self, name=f"{self.name}-c{len(wnids)}-{digest}", num_classes=len(wnids),
                       class_names=class_names, wnids=wnids, presets=self.preset_names,
                       description=f"{self.name} restricted to {len(wnids)} classes from a --classes file")


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_dataset(name: str) -> DatasetSpec:
    """Look up a dataset spec by name (error lists the choices)."""
    return DATASETS.get(name)
