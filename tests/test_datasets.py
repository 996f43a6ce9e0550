"""The real dataset loaders on tiny files in each on-disk format (tests/formats.py): counted train sizes,
the uint8 test split and its memory-mapped cache (reuse, rebuild, subsets), augmented train batches, class
orders, the memory a streamed evaluation takes, and the one-line errors of malformed data roots."""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

import dfkd_bench.data.source as source_module
from dfkd_bench.data import DataWarning, DatasetSpec, get_dataset
from dfkd_bench.data.imagenet_classes import IMAGENETTE_WNIDS, imagenet100_wnids, imagenet_wnids
from dfkd_bench.data.split import EvalSplit, write_cached_split
from dfkd_bench.errors import UserError
from dfkd_bench.resolve import dataset_spec
from cli_helpers import one_line_error, run_cli
from formats import write_cifar10, write_cifar100, write_imagenet_folder, write_tiny_imagenet

# Tiny files fail CIFAR's official checksums and never hold the standard split sizes: both warn by design.
pytestmark = pytest.mark.filterwarnings("ignore::dfkd_bench.data.DataWarning")

# The --classes case: three Imagenette classes in a deliberately unsorted file order.
CLASS_FILE_WNIDS = (IMAGENETTE_WNIDS[5], IMAGENETTE_WNIDS[0], IMAGENETTE_WNIDS[3])


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own $DFKD_BENCH_CACHE, so split caches are seen appearing and nothing is shared."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(path))
    monkeypatch.delenv("DFKD_BENCH_DATA", raising=False)
    return path


# --------------------------------------------------------------------------- the tiny datasets


@dataclass
class Case:
    """A tiny dataset on disk and what its loader must find there, worked out from the files themselves."""

    spec: DatasetSpec
    root: Path
    n_train: int
    test_images: np.ndarray  # (N, 3, S, S) uint8: each test file as the evaluation transform should give it
    test_labels: np.ndarray  # (N,) the class of each file in the spec's class order
    ordered: bool  # whether the split must keep exactly this order (CIFAR's pickles), else any order
    folder: bool  # a JPEG-folder dataset (cached split) rather than CIFAR's in-memory one


def _as_eval(path: Path, spec: DatasetSpec) -> np.ndarray:
    """What a test file should become: RGB, shorter side resized, centre-cropped to input_size."""
    with Image.open(path) as image:
        tensor = TF.pil_to_tensor(image.convert("RGB"))
    tensor = TF.resize(tensor, [spec.eval_resize or spec.input_size], antialias=True)
    return TF.center_crop(tensor, [spec.input_size]).numpy()


def _folder_case(spec: DatasetSpec, root: Path, n_train: int, files: list[tuple[Path, int]]) -> Case:
    images = np.stack([_as_eval(path, spec) for path, _ in files])
    return Case(spec, root, n_train, images, np.array([label for _, label in files]), ordered=False, folder=True)


def make_cifar10(root: Path) -> Case:
    folder = write_cifar10(root, per_class=2, test_per_class=2)
    with open(folder / "test_batch", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return Case(get_dataset("cifar10"), root, 20, images, np.array(batch[b"labels"]), ordered=True, folder=False)


def make_cifar100(root: Path) -> Case:
    folder = write_cifar100(root, per_class=1, test_per_class=1)
    with open(folder / "test", "rb") as fh:
        batch = pickle.load(fh, encoding="bytes")
    images = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return Case(get_dataset("cifar100"), root, 100, images, np.array(batch[b"fine_labels"]), ordered=True,
                folder=False)


def make_tiny_imagenet(root: Path) -> Case:
    """200 classes (the loader insists), listed in wnids.txt in a shuffled order: labels are the sorted order."""
    wnids = list(imagenet_wnids()[::5])
    random.Random(0).shuffle(wnids)
    folder = write_tiny_imagenet(root, wnids, per_class=1, val_per_class=1, test_images=1)
    order = sorted(wnids)
    files = []
    for line in (folder / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        files.append((folder / "val" / "images" / name, order.index(wnid)))
    return _folder_case(get_dataset("tiny-imagenet"), root, 200, files)


def _val_files(root: Path, wnids: tuple[str, ...]) -> list[tuple[Path, int]]:
    """Every val/<wnid>/ file of the classes `wnids`, labelled by the wnid's position in `wnids`."""
    return [(path, label) for label, wnid in enumerate(wnids) for path in sorted((root / "val" / wnid).iterdir())]


def make_imagenette(root: Path) -> Case:
    """Non-square JPEGs both ways round, grayscale ones, CMYK ones (train and val) and a PNG named .JPEG."""
    write_imagenet_folder(root, IMAGENETTE_WNIDS, per_class=2, val_per_class=2)
    val = sorted((root / "val" / IMAGENETTE_WNIDS[3]).iterdir())[0]
    with Image.open(val) as image:
        cmyk = image.convert("CMYK")
    cmyk.save(val, format="JPEG", quality=90)
    return _folder_case(get_dataset("imagenette"), root, 20, _val_files(root, IMAGENETTE_WNIDS))


def make_imagenet_classes(root: Path) -> Case:
    """`imagenet --classes FILE` over an Imagenette folder: three of its ten classes, in the file's order."""
    write_imagenet_folder(root, IMAGENETTE_WNIDS, per_class=2, val_per_class=2)
    classes = root / "classes.txt"
    classes.write_text(f"# three classes\n{CLASS_FILE_WNIDS[0]}\n\n{CLASS_FILE_WNIDS[1]}  # tench\n"
                       f"{CLASS_FILE_WNIDS[2]}\n")
    spec = dataset_spec("imagenet", classes=str(classes))
    return _folder_case(spec, root, 6, _val_files(root, CLASS_FILE_WNIDS))


CASES: dict[str, Callable[[Path], Case]] = {
    "cifar10": make_cifar10,
    "cifar100": make_cifar100,
    "tiny-imagenet": make_tiny_imagenet,
    "imagenette": make_imagenette,
    "imagenet --classes": make_imagenet_classes,
}


@pytest.fixture(params=list(CASES))
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Case:
    return CASES[request.param](tmp_path / "data")


def _check_split(split: EvalSplit, case: Case) -> None:
    """The split holds exactly the test files: uint8 (N, 3, S, S), each image with its own file's class."""
    size = case.spec.input_size
    images = np.asarray(split.images)
    labels = np.asarray(split.labels)
    assert split.is_uint8 and images.dtype == np.uint8
    assert images.shape == (len(case.test_labels), 3, size, size) == split.shape
    assert labels.shape == case.test_labels.shape and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < case.spec.num_classes
    if case.ordered:
        assert np.array_equal(images, case.test_images)
        assert np.array_equal(labels, case.test_labels)
        return
    # Folder datasets: match every split image to the file it came from (nearest, all distinct).
    flat = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))
    ref = torch.from_numpy(case.test_images.reshape(len(case.test_images), -1).astype(np.float32))
    distance = torch.cdist(flat, ref) / flat.shape[1] ** 0.5
    nearest = distance.argmin(1)
    assert sorted(nearest.tolist()) == list(range(len(ref))), "split images are not the test files, once each"
    assert distance.min(1).values.max() < 2.0, "a split image differs from its file"
    assert np.array_equal(labels, case.test_labels[nearest.numpy()]), "a test image has another file's class"


def _split_folders(cache: Path) -> set[Path]:
    splits = cache / "splits"
    return set(splits.iterdir()) if splits.is_dir() else set()


# --------------------------------------------------------------------------- open, count, test split


def test_open_counts_train_and_reads_the_test_split(case: Case, private_cache: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    source = case.spec.open(case.root)
    with pytest.warns(DataWarning, match=f"counted {case.n_train} train images .* the standard split has "
                                         f"{case.spec.train_size}"):
        assert source.train_size == case.n_train

    before = _split_folders(private_cache)
    first = source.test_split()
    _check_split(first, case)
    if not case.folder:
        return
    new = _split_folders(private_cache) - before
    assert len(new) == 1, "the test split of a folder dataset is cached under $DFKD_BENCH_CACHE/splits"
    [folder] = new
    assert {"images.npy", "labels.npy", "meta.json"} <= {p.name for p in folder.iterdir()}
    assert json.loads((folder / "meta.json").read_text())["count"] == len(case.test_labels)

    def no_rewrite(*args, **kwargs):
        raise AssertionError("the cached split was rebuilt instead of reused")

    monkeypatch.setattr(source_module, "write_cached_split", no_rewrite)
    again = case.spec.open(case.root).test_split()  # a fresh source: only the cache on disk is shared
    assert again.on_device is None  # memory-mapped from the cache
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))
    assert torch.equal(again.labels, first.labels)
    assert _split_folders(private_cache) - before == new


def test_a_cache_with_the_wrong_count_is_rebuilt(tmp_path: Path, private_cache: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    case = make_imagenette(tmp_path / "data")
    source = case.spec.open(case.root)
    first = source.test_split()
    [folder] = _split_folders(private_cache)
    meta = json.loads((folder / "meta.json").read_text())
    (folder / "meta.json").write_text(json.dumps({**meta, "count": meta["count"] + 1}))

    calls = []
    original = source_module.write_cached_split

    def counting(*args, **kwargs):
        calls.append(args[0])
        return original(*args, **kwargs)

    monkeypatch.setattr(source_module, "write_cached_split", counting)
    rebuilt = source.test_split()
    assert calls == [folder]
    assert json.loads((folder / "meta.json").read_text())["count"] == len(case.test_labels)
    assert np.array_equal(np.asarray(rebuilt.images), np.asarray(first.images))
    assert torch.equal(rebuilt.labels, first.labels)
    _check_split(rebuilt, case)


@pytest.mark.parametrize("name", ["cifar10", "imagenette"])
def test_limit_takes_evenly_spaced_images(name: str, tmp_path: Path) -> None:
    case = CASES[name](tmp_path / "data")
    source = case.spec.open(case.root)
    full = source.test_split()
    k = 5
    subset = source.test_split(limit=k)
    full_images, images = np.asarray(full.images), np.asarray(subset.images)
    assert images.shape == (k, *full_images.shape[1:]) and images.dtype == np.uint8
    positions = [next(i for i in range(len(full_images)) if np.array_equal(full_images[i], image))
                 for image in images]
    n = len(full_images)
    assert positions[0] == 0 and positions[-1] == n - 1
    gaps = np.diff(positions)
    assert gaps.min() >= (n - 1) // (k - 1) and gaps.max() <= -(-(n - 1) // (k - 1))  # evenly spaced
    assert torch.equal(subset.labels, full.labels[positions])
    assert np.array_equal(np.asarray(source.test_split(limit=k).images), images)  # the subset's own cache


# --------------------------------------------------------------------------- augmented train batches


@pytest.mark.parametrize("name", list(CASES))
def test_train_loader_yields_augmented_uint8_batches(name: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Default worker processes (their seeds come from the loader's seed); a whole epoch, so every odd
    file (grayscale, CMYK, PNG) is decoded."""
    monkeypatch.delenv("DFKD_BENCH_WORKERS", raising=False)
    case = CASES[name](tmp_path / "data")
    source = case.spec.open(case.root)
    size, batch = case.spec.input_size, 4
    seen = 0
    batches = []
    for images, labels in source.train_loader(batch, seed=0):
        assert images.dtype == torch.uint8 and images.shape == (batch, 3, size, size)
        assert labels.dtype == torch.int64 and labels.shape == (batch,)
        assert 0 <= labels.min() and labels.max() < case.spec.num_classes
        batches.append((images, labels))
        seen += batch
    assert seen == case.n_train // batch * batch  # drop_last: full batches only
    if name == "cifar10":  # 32 px: crop with padding and flips move pixels, so images differ from the files
        with open(case.root / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
            raw = pickle.load(fh, encoding="bytes")
        originals = {bytes(row) for row in np.asarray(raw[b"data"], dtype=np.uint8)}
        assert any(image.numpy().tobytes() not in originals for images, _ in batches for image in images)
    again = [images for images, _ in source.train_loader(batch, seed=0)]
    assert all(torch.equal(a, b) for (a, _), b in zip(batches, again)), "the same seed gives the same batches"


def test_train_labels_are_the_class_of_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the random crop swapped for the evaluation transform, every train image is its file with its class."""
    import dfkd_bench.data.folders as folders

    monkeypatch.setattr(folders, "train_transform", source_module.eval_transform)
    monkeypatch.setenv("DFKD_BENCH_WORKERS", "0")
    case = make_imagenet_classes(tmp_path / "data")
    files = [(path, label) for label, wnid in enumerate(CLASS_FILE_WNIDS)
             for path in sorted((case.root / "train" / wnid).iterdir())]
    reference = {_as_eval(path, case.spec).tobytes(): label for path, label in files}
    got = [(image.numpy().tobytes(), int(label)) for images, labels in case.spec.open(case.root).train_loader(2, 0)
           for image, label in zip(images, labels)]
    assert len(got) == len(files) == 6
    assert sorted(reference[image] for image, _ in got) == sorted(label for _, label in files)
    assert all(reference[image] == label for image, label in got)


# --------------------------------------------------------------------------- class orders


def test_imagenet_class_order_is_the_sorted_wnid_order(tmp_path: Path) -> None:
    """All 1000 val/<wnid>/ folders, each holding one flat image whose colour encodes the wnid's sorted
    position: the label the loader gives each image is that position (torchvision's head order)."""
    wnids = sorted(imagenet_wnids())
    root = tmp_path / "imagenet"
    for position in random.Random(0).sample(range(1000), 1000):  # created in no particular order
        folder = root / "val" / wnids[position]
        folder.mkdir(parents=True)
        colour = (position % 32 * 8, position // 32 * 8, 128)
        Image.new("RGB", (24, 16), colour).save(folder / f"ILSVRC2012_val_{position + 1:08d}.JPEG", quality=95)
    spec = get_dataset("imagenet")
    assert spec.wnids == tuple(wnids) and spec.class_names[:2] == ("tench", "goldfish")
    source = spec.open(root)
    with pytest.warns(DataWarning, match="no train split"):
        assert source.train_size == 1281167  # no train/: the known size sets the budget
    split = source.test_split(limit=12)
    images = np.asarray(split.images).astype(int)
    decoded = (np.round(images[:, 0].mean((1, 2)) / 8) + 32 * np.round(images[:, 1].mean((1, 2)) / 8)).astype(int)
    assert decoded.tolist() == split.labels.tolist()
    assert split.labels.tolist() == np.linspace(0, 999, 12).round().astype(int).tolist()


def test_imagenette_classes_follow_IMAGENETTE_WNIDS(tmp_path: Path) -> None:
    spec = get_dataset("imagenette")
    assert spec.wnids == IMAGENETTE_WNIDS and spec.num_classes == 10
    assert spec.class_names[0] == "tench" and spec.class_names[9] == "parachute"
    restricted = dataset_spec("imagenet", classes=str(_class_file(tmp_path, CLASS_FILE_WNIDS)))
    assert restricted.wnids == CLASS_FILE_WNIDS and restricted.num_classes == 3  # the file's order
    assert restricted.name.startswith("imagenet-c3-") and restricted.class_names[1] == "tench"


def _class_file(tmp_path: Path, wnids: tuple[str, ...]) -> Path:
    path = tmp_path / "classes.txt"
    path.write_text("".join(f"{w}\n" for w in wnids))
    return path


# --------------------------------------------------------------------------- memory of a streamed evaluation

PEAK_CHILD = textwrap.dedent("""
    import json, resource, sys
    import torch
    torch.set_num_threads(1)
    from pathlib import Path
    from dfkd_bench.data.split import EvalSplit, open_cached_split
    from dfkd_bench.engine.augment import Normalize
    from dfkd_bench.engine.evaluate import accuracy

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 8, stride=8), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10))
    norm = Normalize((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    batch = int(sys.argv[2])
    # Baseline: the same evaluation over a few in-memory batches (what one batch costs, whatever the split).
    warm = EvalSplit(torch.zeros(3 * batch, 3, 224, 224, dtype=torch.uint8), torch.zeros(3 * batch, dtype=torch.long))
    accuracy(model, warm, norm, batch_size=batch)
    split = open_cached_split(Path(sys.argv[1]))
    base = peak_mb()
    acc = accuracy(model, split, norm, batch_size=batch)
    print(json.dumps({"base_mb": base, "peak_mb": peak_mb(), "acc": acc, "n": len(split)}))
""")


def test_evaluating_a_cached_split_streams_it(tmp_path: Path) -> None:
    """A ~300 MB uint8 split evaluated in a fresh process: its peak RSS grows by far less than the split."""
    count, batch = 2000, 100
    shape = (3, 224, 224)
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, count)

    def batches():
        for start in range(0, count, batch):
            yield (torch.from_numpy(rng.integers(0, 256, (batch, *shape), dtype=np.uint8)),
                   torch.from_numpy(labels[start:start + batch]))

    folder = tmp_path / "split"
    written = write_cached_split(folder, batches(), count, shape, {"key": "peak-memory test"})
    split_mb = written.nbytes / 2**20
    assert split_mb > 280 and (folder / "images.npy").stat().st_size > written.nbytes
    del written
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", PEAK_CHILD, str(folder), str(batch)], capture_output=True,
                            text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["n"] == count and 0 <= report["acc"] <= 100
    growth = report["peak_mb"] - report["base_mb"]
    assert growth < 150, f"evaluating a {split_mb:.0f} MB split grew the peak RSS by {growth:.0f} MB"


# --------------------------------------------------------------------------- malformed data roots


def _missing_root(tmp: Path) -> tuple[list[str], list[str]]:
    root = tmp / "no" / "such" / "dir"
    return ["--dataset", "cifar10", "--data-root", str(root)], [f"data root {root}", "does not exist",
                                                                   "expected a folder"]


def _cifar_missing_batch(tmp: Path) -> tuple[list[str], list[str]]:
    folder = write_cifar10(tmp / "c10", per_class=1, test_per_class=1)
    (folder / "data_batch_3").unlink()
    return ["--dataset", "cifar10", "--data-root", str(tmp / "c10")], [
        "expected the python-pickle batches", "data_batch_1", "test_batch", f"in {folder}",
        "missing data_batch_3"]


def _imagenet_without_val(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_imagenet_folder(tmp / "inet", per_class=1, val_per_class=1)
    shutil.rmtree(root / "val")
    return ["--dataset", "imagenet", "--data-root", str(root)], [
        f"expected ImageNet's layout under {root}", "val/<wnid>/*.JPEG", "no val/ folder"]


def _imagenette_as_imagenet100(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_imagenet_folder(tmp / "nette", IMAGENETTE_WNIDS, per_class=1, val_per_class=1)
    found = len(set(IMAGENETTE_WNIDS) & set(imagenet100_wnids()))
    return ["--dataset", "imagenet100", "--data-root", str(root)], [
        "imagenet100", "expected 100 class folders named by wnid", f"under {root / 'val'}",
        f"found {found} of them (10 folders in all)"]


def _imagenette_missing_a_class(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_imagenet_folder(tmp / "nette", IMAGENETTE_WNIDS, per_class=1, val_per_class=1)
    shutil.rmtree(root / "val" / IMAGENETTE_WNIDS[4])
    return ["--dataset", "imagenette", "--data-root", str(root)], [
        "expected 10 class folders", f"under {root / 'val'}", "found 9 of them", f"missing {IMAGENETTE_WNIDS[4]}"]


def _tiny_without_annotations(tmp: Path) -> tuple[list[str], list[str]]:
    folder = write_tiny_imagenet(tmp / "tiny", per_class=1, val_per_class=1)
    (folder / "val" / "val_annotations.txt").unlink()
    return ["--dataset", "tiny-imagenet", "--data-root", str(tmp / "tiny")], [
        "tiny-imagenet", "val/val_annotations.txt", f"in {folder}", "missing val/val_annotations.txt"]


def _tiny_wrong_class_count(tmp: Path) -> tuple[list[str], list[str]]:
    folder = write_tiny_imagenet(tmp / "tiny", per_class=1, val_per_class=1)  # 4 classes, not 200
    return ["--dataset", "tiny-imagenet", "--data-root", str(folder)], [
        f"{folder / 'wnids.txt'} lists 4 classes, expected 200"]


def _classes_file_bad_line(tmp: Path) -> tuple[list[str], list[str]]:
    root = write_imagenet_folder(tmp / "nette", IMAGENETTE_WNIDS[:2], per_class=1, val_per_class=1)
    classes = tmp / "classes.txt"
    classes.write_text(f"{IMAGENETTE_WNIDS[0]}\ntench\n")
    return ["--dataset", "imagenet", "--data-root", str(root), "--classes", str(classes)], [
        f"line 2 of class list '{classes}'", "'tench', not a wnid", "one wnid such as n01440764 a line"]


MALFORMED = {
    "missing root": _missing_root,
    "CIFAR folder missing a batch": _cifar_missing_batch,
    "ImageNet root without val/": _imagenet_without_val,
    "Imagenette folder as imagenet100": _imagenette_as_imagenet100,
    "Imagenette folder missing a class": _imagenette_missing_a_class,
    "tiny-imagenet without val_annotations.txt": _tiny_without_annotations,
    "tiny-imagenet wnids.txt with 4 classes": _tiny_wrong_class_count,
    "--classes file with a bad line": _classes_file_bad_line,
}


@pytest.mark.parametrize("name", list(MALFORMED))
@pytest.mark.parametrize("command", ["run", "teacher train"])
def test_malformed_root_is_one_line_exit_2(name: str, command: str, tmp_path: Path) -> None:
    extra, expected = MALFORMED[name](tmp_path)
    out = tmp_path / "results"
    base = ["run", "--methods", "fast", "--out", str(out), "--quiet"] if command == "run" else \
        ["teacher", "train", "--quiet"]
    one_line_error([*base, "--device", "cpu", *extra], *expected)
    assert not out.exists()


def test_a_data_root_under_home_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    write_cifar10(home / "c10", per_class=1, test_per_class=1)
    monkeypatch.setenv("HOME", str(home))
    source = get_dataset("cifar10").open("~/c10")
    assert source.root == home / "c10"


def test_open_errors_are_user_errors(tmp_path: Path) -> None:
    """The library (not only the CLI) raises the one-line UserError, and `needs_data_root` is enforced."""
    with pytest.raises(UserError, match=r"cifar10 needs its files: pass --data-root DIR or set \$DFKD_BENCH_DATA"):
        get_dataset("cifar10").open(None)
    with pytest.raises(UserError, match="does not exist"):
        get_dataset("imagenette").open(tmp_path / "nothing")


# --------------------------------------------------------------------------- where the files may be


def test_cifar_root_may_be_the_batches_folder_itself(tmp_path: Path) -> None:
    case = make_cifar10(tmp_path / "data")
    source = case.spec.open(case.root / "cifar-10-batches-py")
    assert source.train_size == case.n_train
    _check_split(source.test_split(), case)


def test_imagenette_parachute_read_from_its_alias_folder(tmp_path: Path) -> None:
    """Some Imagenette copies name the parachute folder n03888605: it is read for n03888257, with a warning."""
    case = make_imagenette(tmp_path / "data")
    for split in ("train", "val"):
        (case.root / split / "n03888257").rename(case.root / split / "n03888605")
    with pytest.warns(DataWarning, match="no folder n03888257; reading n03888605"):
        source = case.spec.open(case.root)
    assert source.train_size == case.n_train
    with pytest.warns(DataWarning, match="n03888605"):
        split = source.test_split()
    assert (split.labels == 9).sum() == 2
    _check_split(split, case)  # the same files, the parachute ones still class 9


def test_a_corrupt_test_image_is_a_one_line_error(tmp_path: Path) -> None:
    root = write_imagenet_folder(tmp_path / "nette", IMAGENETTE_WNIDS, per_class=1, val_per_class=1)
    broken = sorted((root / "val" / IMAGENETTE_WNIDS[2]).iterdir())[0]
    broken.write_bytes(broken.read_bytes()[:100])
    code, stdout, stderr = run_cli(["run", "--smoke", "--methods", "muse", "--dataset", "imagenette",
                                    "--data-root", str(root), "--teacher", "tv_resnet18", "--student", "tv_resnet18",
                                    "--resolution", "32", "--set", "muse.feed=native", "--device", "cpu",
                                    "--out", str(tmp_path / "results"), "--quiet"])
    errors = [line for line in stderr.splitlines() if not line.startswith("warning: ")]
    assert code == 2, stderr[-2000:]
    assert len(errors) == 1 and errors[0].startswith("error: ") and broken.name in errors[0], stderr
