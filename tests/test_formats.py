"""The tiny on-disk datasets of tests/formats.py read as the real ones do, the ImageNet class lists, and
label embeddings selected by wnid."""

from __future__ import annotations

import pickle
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.cifar as tv_cifar
from PIL import Image
from torchvision.datasets import ImageFolder

from dfkd_bench.data.imagenet_classes import (
    IMAGENETTE_WNIDS,
    class_indices,
    imagenet100_wnids,
    imagenet_descriptions,
    imagenet_wnids,
    read_wnid_file,
)
from dfkd_bench.errors import UserError
from dfkd_bench.label_embeddings import (
    LabelEmbeddingError,
    embeddings_for_wnids,
    load_label_embeddings,
    shipped_class_names,
)
from formats import (
    CIFAR100_COARSE_NAMES,
    CIFAR100_COARSE_OF_FINE,
    class_image,
    write_cifar10,
    write_cifar100,
    write_imagenet_folder,
    write_tiny_imagenet,
)

WNIDS = IMAGENETTE_WNIDS[:3]


@pytest.fixture
def no_md5(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the official files' md5 sums; the tiny files pass only with the check off."""
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)


def _one_line_user_error(excinfo: pytest.ExceptionInfo, *parts: str) -> str:
    message = str(excinfo.value)
    assert isinstance(excinfo.value, UserError) and "\n" not in message
    for part in parts:
        assert part in message
    return message


# --- CIFAR ------------------------------------------------------------------------------------------------


def test_cifar10_loads_through_torchvision(tmp_path: Path, no_md5: None) -> None:
    folder = write_cifar10(tmp_path, per_class=3, test_per_class=2)
    assert folder == tmp_path / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    train = tv_cifar.CIFAR10(tmp_path, train=True, download=False)
    test = tv_cifar.CIFAR10(tmp_path, train=False, download=False)
    assert (len(train), len(test)) == (30, 20)
    assert train.classes == shipped_class_names("cifar10")
    assert Counter(train.targets) == {c: 3 for c in range(10)}
    assert train.data.shape == (30, 32, 32, 3) and train.data.dtype == np.uint8
    # Rows are R, G, B planes: torchvision's HWC view must give back the images that were written.
    for image, label in zip(train.data, train.targets):
        assert any(np.array_equal(image, class_image(label, 10, i, 32, 32)) for i in range(3))
    image, label = test[0]
    assert isinstance(image, Image.Image) and image.size == (32, 32) and 0 <= label < 10


def test_cifar_pickles_are_python2_files(tmp_path: Path) -> None:
    folder = write_cifar10(tmp_path)
    raw = (folder / "data_batch_1").read_bytes()
    assert raw.startswith(b"\x80\x02") and b"cnumpy.core.multiarray\n_reconstruct" in raw
    with open(folder / "data_batch_1", "rb") as f:  # the CIFAR page's reader
        batch = pickle.load(f, encoding="bytes")
    assert set(batch) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert batch[b"data"].dtype == np.uint8 and batch[b"data"].shape == (6, 3072)
    assert batch[b"batch_label"] == b"training batch 1 of 5"
    with open(folder / "batches.meta", "rb") as f:
        meta = pickle.load(f, encoding="latin1")
    assert meta["label_names"][0] == "airplane" and meta["num_vis"] == 3072


def test_cifar100_loads_through_torchvision(tmp_path: Path, no_md5: None) -> None:
    folder = write_cifar100(tmp_path, per_class=2, test_per_class=1)
    assert sorted(p.name for p in folder.iterdir()) == ["meta", "test", "train"]
    train = tv_cifar.CIFAR100(tmp_path, train=True)
    test = tv_cifar.CIFAR100(tmp_path, train=False)
    assert (len(train), len(test)) == (200, 100)
    assert train.classes == shipped_class_names("cifar100")
    with open(folder / "train", "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    assert entry[b"coarse_labels"] == [CIFAR100_COARSE_OF_FINE[y] for y in entry[b"fine_labels"]]
    with open(folder / "meta", "rb") as f:
        meta = pickle.load(f, encoding="bytes")
    assert [n.decode() for n in meta[b"coarse_label_names"]] == list(CIFAR100_COARSE_NAMES)


def test_images_are_learnable_and_deterministic(tmp_path: Path, no_md5: None) -> None:
    write_cifar10(tmp_path / "a", per_class=3, test_per_class=2)
    write_cifar10(tmp_path / "b", per_class=3, test_per_class=2)
    for name in ("data_batch_3", "test_batch"):
        assert (tmp_path / "a" / "cifar-10-batches-py" / name).read_bytes() == \
            (tmp_path / "b" / "cifar-10-batches-py" / name).read_bytes()
    train = tv_cifar.CIFAR10(tmp_path / "a", train=True)
    test = tv_cifar.CIFAR10(tmp_path / "a", train=False)
    colour = lambda data: data.reshape(len(data), -1, 3).mean(axis=1)  # noqa: E731
    means = np.stack([colour(train.data[np.array(train.targets) == c]).mean(0) for c in range(10)])
    guess = np.linalg.norm(colour(test.data)[:, None] - means[None], axis=2).argmin(1)
    assert (guess == np.array(test.targets)).mean() >= 0.9  # nearest mean colour already separates the classes


# --- Tiny-ImageNet and ImageNet folders ---------------------------------------------------------------------


def test_tiny_imagenet_layout(tmp_path: Path) -> None:
    folder = write_tiny_imagenet(tmp_path, WNIDS, per_class=3, val_per_class=2)
    assert folder == tmp_path / "tiny-imagenet-200"
    assert (folder / "wnids.txt").read_text().split() == list(WNIDS)
    words = dict(line.split("\t") for line in (folder / "words.txt").read_text().splitlines())
    assert set(WNIDS) < set(words) and words[WNIDS[0]] == imagenet_descriptions()[WNIDS[0]]
    modes = set()
    for wnid in WNIDS:
        images = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        assert [p.name for p in images] == [f"{wnid}_{i}.JPEG" for i in range(3)]
        boxes = [line.split("\t") for line in (folder / "train" / wnid / f"{wnid}_boxes.txt").read_text().splitlines()]
        assert [b[0] for b in boxes] == [p.name for p in images] and all(len(b) == 5 for b in boxes)
        for path in images:
            with Image.open(path) as image:
                assert image.format == "JPEG" and image.size == (64, 64)
                modes.add(image.mode)
    assert modes == {"RGB", "L"}  # Tiny-ImageNet holds grayscale JPEGs too
    rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines()]
    assert all(len(r) == 6 and re.fullmatch(r"val_\d+\.JPEG", r[0]) for r in rows)
    assert Counter(r[1] for r in rows) == {w: 2 for w in WNIDS}
    assert all((folder / "val" / "images" / r[0]).is_file() for r in rows)
    assert len(list((folder / "test" / "images").glob("test_*.JPEG"))) == 2
    assert len(ImageFolder(folder / "train")) == 9


def test_imagenet_folder_reads_with_imagefolder(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path, WNIDS, per_class=3, val_per_class=2, size=(80, 64))
    train, val = ImageFolder(root / "train"), ImageFolder(root / "val")
    assert train.classes == val.classes == sorted(WNIDS)
    assert (len(train), len(val)) == (9, 6)
    assert all(re.fullmatch(r"ILSVRC2012_val_\d{8}\.JPEG", Path(p).name) for p, _ in val.samples)
    kinds = set()
    for path, _ in train.samples + val.samples:
        with Image.open(path) as image:
            kinds.add((image.format, image.mode))
            assert sorted(image.size) == [64, 80]
    assert {("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGB")} == kinds
    image, label = train[0]
    assert image.mode == "RGB" and label == 0  # ImageFolder's loader converts every mode to RGB


# --- ImageNet class lists ------------------------------------------------------------------------------------


def test_imagenet_wnids_are_torchvision_class_order() -> None:
    from torchvision.models import ResNet50_Weights

    wnids = imagenet_wnids()
    assert len(wnids) == len(set(wnids)) == 1000 and list(wnids) == sorted(wnids)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wnids)
    descriptions = imagenet_descriptions()
    categories = ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    # Class i of torchvision's heads names the same thing as wnid i (its first word is one of the lemmas).
    assert all(c.split()[0].lower() in descriptions[w].lower() for c, w in zip(categories, wnids))
    assert descriptions["n01440764"] == "tench, Tinca tinca"
    descriptions.clear()
    assert len(imagenet_descriptions()) == 1000


def test_subsets() -> None:
    assert class_indices(IMAGENETTE_WNIDS) == [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]
    names = ["tench", "English springer", "cassette player", "chain saw", "church", "French horn",
             "garbage truck", "gas pump", "golf ball", "parachute"]  # fast.ai's Imagenette classes
    assert all(imagenet_descriptions()[w].startswith(n) for w, n in zip(IMAGENETTE_WNIDS, names))
    subset = imagenet100_wnids()
    assert len(subset) == len(set(subset)) == 100 and list(subset) == sorted(subset)
    assert set(subset) <= set(imagenet_wnids())
    assert class_indices(["n03888257", "n01440764"], universe=IMAGENETTE_WNIDS) == [9, 0]


def test_class_indices_names_unknown_wnids() -> None:
    with pytest.raises(UserError) as excinfo:
        class_indices(["n01440764", "n99999999", "n00000001"])
    _one_line_user_error(excinfo, "2 class id(s)", "1000 ImageNet-1k", "n99999999, n00000001")
    with pytest.raises(UserError) as excinfo:
        class_indices([f"n9999999{i}" for i in range(8)], universe=IMAGENETTE_WNIDS)
    _one_line_user_error(excinfo, "the 10 classes of the list", "first 5 shown")


def test_read_wnid_file(tmp_path: Path) -> None:
    path = tmp_path / "classes.txt"
    path.write_text("# my subset\n\nn03888257  # parachute\n  n01440764\n")
    assert read_wnid_file(path) == ("n03888257", "n01440764")
    cases = {
        "n01440764\ntench\n": ["line 2", "'tench'", "not a wnid"],
        "n01440764\nn014407640\n": ["line 2"],
        "n01440764\nn02102040\nn01440764\n": ["n01440764 twice", "lines 1 and 3"],
        "# nothing\n\n": ["no wnids"],
    }
    for text, parts in cases.items():
        path.write_text(text)
        with pytest.raises(UserError) as excinfo:
            read_wnid_file(path)
        _one_line_user_error(excinfo, str(path), *parts)
    with pytest.raises(UserError) as excinfo:
        read_wnid_file(tmp_path / "missing.txt")
    _one_line_user_error(excinfo, "missing.txt", "cannot read")


# --- label embeddings by wnid --------------------------------------------------------------------------------


def test_shipped_imagenet_embeddings_follow_the_wnid_order() -> None:
    from torchvision.models import ResNet50_Weights

    full = load_label_embeddings("imagenet")
    categories = list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
    categories[264] = "Cardigan Welsh corgi"  # shipped so, to tell it from 474 "cardigan"
    assert full.class_names == categories and full.num_classes == len(imagenet_wnids())


def test_embeddings_for_wnids_selects_rows() -> None:
    full = load_label_embeddings("imagenet")
    wnids = ["n03888257", "n01440764", "n02102040"]  # file order, not sorted: kept as given
    emb = embeddings_for_wnids(wnids)
    rows = class_indices(wnids)
    assert (emb.num_classes, emb.dim) == (3, full.dim)
    assert emb.vectors.dtype == torch.float32 and torch.equal(emb.vectors, full.vectors[rows])
    assert emb.class_names == ["parachute", "tench", "English springer"] == [full.class_names[i] for i in rows]
    assert (emb.prompt, emb.encoder) == (full.prompt, full.encoder)
    assert embeddings_for_wnids(imagenet100_wnids()).num_classes == 100


def test_embeddings_for_unknown_wnid_says_how_to_compute_them() -> None:
    with pytest.raises(LabelEmbeddingError) as excinfo:
        embeddings_for_wnids(["n01440764", "n99999999"])
    _one_line_user_error(excinfo, "n99999999", "dfkd-bench embed-labels --classes FILE --out FILE",
                         "--label-embeddings FILE")
    with pytest.raises(LabelEmbeddingError):
        embeddings_for_wnids([])
