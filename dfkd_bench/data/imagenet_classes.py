"""ImageNet-1k class ids (WordNet wnids) and the class subsets the suite knows, from maintained sources.

The 1000 wnids and their descriptions come from timm's data files (``timm.data.ImageNetInfo``), not a
hand-typed list.  Their sorted order is the standard class-index order (torchvision's ImageFolder order
and the order of torchvision's pretrained ImageNet heads).  Subsets: Imagenette (fast.ai's 10 classes)
and ImageNet-100 (the 100 classes of CMC, Tian et al. 2019, shipped as ``assets/class_lists/imagenet100.txt``).
Tiny-ImageNet's class descriptions come from the dataset's own ``words.txt``, not from here.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..errors import UserError

__all__ = [
    "FOLDER_ALIASES",
    "IMAGENETTE_WNIDS",
    "class_indices",
    "imagenet100_wnids",
    "imagenet_descriptions",
    "imagenet_wnids",
    "read_wnid_file",
]

# fast.ai's Imagenette folders; parachute is n03888257 (class 701), not its neighbour n03888605 (parallel bars).
IMAGENETTE_WNIDS: tuple[str, ...] = (
    "n01440764", "n02102040", "n02979186", "n03000684", "n03028079",
    "n03394916", "n03417042", "n03425413", "n03445777", "n03888257",
)

# Folders some copies name differently: Imagenette's parachute class (ImageNet n03888257) is sometimes
# listed as n03888605, which is ImageNet's "parallel bars"; read that folder for it only when the
# canonical one is absent and n03888605 is not itself one of the dataset's classes.
FOLDER_ALIASES: dict[str, str] = {"n03888257": "n03888605"}

_WNID = re.compile(r"n\d{8}")
_CLASS_LISTS = Path(__file__).resolve().parent.parent / "assets" / "class_lists"
_SHOWN = 5


@functools.lru_cache(maxsize=1)
def _imagenet_info():  # -> timm.data.ImageNetInfo
    try:
        from timm.data import ImageNetInfo
    except ImportError as exc:
        raise UserError(f"the ImageNet class list comes from timm, which is not importable ({exc}); "
                        "install it with `pip install timm`") from exc
    return ImageNetInfo("imagenet-1k")


@functools.lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k wnids in sorted order, which is the standard class-index order."""
    wnids = tuple(_imagenet_info().label_names())
    if len(wnids) != 1000 or len(set(wnids)) != 1000 or list(wnids) != sorted(wnids):
        raise RuntimeError(f"timm's ImageNet-1k synset list is not 1000 sorted unique wnids (got {len(wnids)})")
    return wnids


@functools.lru_cache(maxsize=1)
def _descriptions() -> dict[str, str]:
    info = _imagenet_info()
    return {wnid: info.label_name_to_description(wnid) for wnid in imagenet_wnids()}


def imagenet_descriptions() -> dict[str, str]:
    """wnid -> WordNet lemmas (e.g. "tench, Tinca tinca") for the 1000 classes, for class names in reports."""
    return dict(_descriptions())


def read_wnid_file(path: str | os.PathLike[str]) -> tuple[str, ...]:
    """Read a class list (one wnid a line, in file order; blank lines and ``#`` comments skipped) for ``--classes``."""
    fmt = "write one wnid such as n01440764 a line"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot read class list '{path}' ({exc.strerror or exc}); {fmt}") from exc
    wnids: list[str] = []
    first_line: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if not _WNID.fullmatch(line):
            raise UserError(f"line {number} of class list '{path}' is {line[:40]!r}, not a wnid; {fmt}")
        if line in first_line:
            raise UserError(f"class list '{path}' names {line} twice (lines {first_line[line]} and {number}); "
                            "list each class once")
        first_line[line] = number
        wnids.append(line)
    if not wnids:
        raise UserError(f"class list '{path}' has no wnids; {fmt}")
    return tuple(wnids)


@functools.lru_cache(maxsize=1)
def imagenet100_wnids() -> tuple[str, ...]:
    """The 100 ImageNet-100 wnids (CMC's subset) in sorted order, their class-index order as an ImageFolder."""
    return tuple(sorted(read_wnid_file(_CLASS_LISTS / "imagenet100.txt")))


@functools.lru_cache(maxsize=8)
def _positions(universe: tuple[str, ...]) -> dict[str, int]:
    return {wnid: i for i, wnid in enumerate(universe)}


def class_indices(wnids: Sequence[str], universe: Sequence[str] | None = None) -> list[int]:
    """Index of each wnid in ``universe`` (default: the 1000 ImageNet-1k classes), to restrict a teacher's head."""
    full = universe is None
    positions = _positions(imagenet_wnids() if full else tuple(universe))
    unknown = [w for w in dict.fromkeys(wnids) if w not in positions]
    if unknown:
        which = "the 1000 ImageNet-1k classes" if full else f"the {len(positions)} classes of the list"
        more = f" (first {_SHOWN} shown)" if len(unknown) > _SHOWN else ""
        raise UserError(f"{len(unknown)} class id(s) not among {which}: {', '.join(unknown[:_SHOWN])}{more}")
    return [positions[w] for w in wnids]
