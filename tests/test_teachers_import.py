"""Teachers on tiny real-format data: `teacher train --smoke` writes a cached teacher and its card,
`teacher import` round-trips it (and .safetensors, wrapped and prefixed checkpoints), refuses what does
not fit, restricts a 1000-class ImageNet teacher to Imagenette, and cards guard the weights they name."""

from __future__ import annotations

import argparse
import json
import pickle
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from dfkd_bench.checkpoints import read_state_dict
from dfkd_bench.data import get_dataset
from dfkd_bench.data.imagenet_classes import IMAGENETTE_WNIDS
from dfkd_bench.errors import UserError
from dfkd_bench.models import create_model
from dfkd_bench.resolve import dataset_spec
from dfkd_bench.teachers import (
    TeacherCard,
    file_sha256,
    list_teachers,
    load_cached_teacher,
    teacher_path,
    teachers_dir,
)
from cli_helpers import ok, one_line_error
from formats import write_imagenet_folder

pytestmark = [pytest.mark.filterwarnings("ignore::dfkd_bench.data.DataWarning"),
              pytest.mark.usefixtures("module_cache")]

# torchvision's class indices of Imagenette's ten classes (tench, English springer, cassette player, chain
# saw, church, French horn, garbage truck, gas pump, golf ball, parachute): the rows a 1000-class head keeps.
IMAGENETTE_ROWS = [0, 217, 482, 491, 497, 566, 569, 571, 574, 701]


def card_files() -> set[Path]:
    return set(teachers_dir().glob("*/*")) if teachers_dir().is_dir() else set()


def read_card(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


# --------------------------------------------------------------------------- module fixtures


@pytest.fixture(scope="module")
def nette_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_folder(tmp_path_factory.mktemp("imagenette"), IMAGENETTE_WNIDS, per_class=1,
                                 val_per_class=1)


@pytest.fixture(scope="module")
def trained(cifar_root: Path) -> tuple[Path, str]:
    """`teacher train --smoke` of wrn16_1 on the tiny CIFAR-10 (default DataLoader workers): (weights, output)."""
    out = ok(["teacher", "train", "--dataset", "cifar10", "--arch", "wrn16_1", "--data-root", str(cifar_root),
              "--smoke", "--device", "cpu"])
    return teacher_path("cifar10", "wrn16_1", 0, smoke=True), out


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """torchvision's resnet18 with a 1000-class head, saved as a DDP run would: {"model": {"module.*": ...}}."""
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet18_ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 89, "best_acc1": 69.8}, path)
    return path, state


@pytest.fixture(scope="module")
def imported_imagenette(imagenet_checkpoint, nette_root: Path) -> dict[str, Any]:
    """The 1000-class checkpoint imported for Imagenette, measured on its (tiny) val split."""
    path, _ = imagenet_checkpoint
    out = ok(["teacher", "import", str(path), "--dataset", "imagenette", "--arch", "tv_resnet18",
              "--data-root", str(nette_root), "--device", "cpu"])
    [card] = [c for c in list_teachers() if c.dataset == "imagenette"]
    return {"card": card, "out": out}


def random_state(arch: str, classes: int, seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(arch, classes).state_dict()


# --------------------------------------------------------------------------- train and round trip


def test_teacher_train_smoke_writes_a_cached_teacher_and_card(trained, cifar_root: Path) -> None:
    path, out = trained
    assert path.is_file() and path.with_suffix(".json").is_file()
    card = read_card(path)
    assert card["sha256"] == file_sha256(path) and len(card["sha256"]) == 64
    assert card["smoke"] is True and card["source"] == "trained"
    assert (card["dataset"], card["arch"], card["num_classes"], card["seed"]) == ("cifar10", "wrn16_1", 10, 0)
    assert card["recipe"]["epochs"] == 1 and card["recipe"]["max_steps_per_epoch"] > 0
    assert card["test_images"] == 20 and 0 <= card["test_acc"] <= 100
    assert card["path"] == str(path)
    blob = torch.load(path, weights_only=True)
    assert (blob["arch"], blob["num_classes"]) == ("wrn16_1", 10)
    assert "teacher wrn16_1 for cifar10" in out and "[smoke]" in out and card["sha256"][:12] in out
    assert path.name == "wrn16_1-seed0-smoke.pt"  # apart from a real teacher's file


def test_import_round_trips_the_trained_teacher(trained, cifar_root: Path) -> None:
    path, _ = trained
    trained_card = read_card(path)
    before = card_files()
    ok(["teacher", "import", str(path), "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu"])
    [weights] = [p for p in card_files() - before if p.suffix == ".pt"]
    card = read_card(weights)
    assert card["source"] == f"imported:{path.resolve()}" and card["source_sha256"] == file_sha256(path)
    assert card["test_acc"] is None and card["test_images"] == 0  # no --data-root: not measured
    assert card["sha256"] == file_sha256(weights) and card["smoke"] is False and card["restricted_from"] is None
    assert_same_state(read_state_dict(weights), read_state_dict(path))

    # with the data root, the accuracy is measured and written to the card: the trained teacher's own
    out = ok(["teacher", "import", str(path), "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu",
              "--data-root", str(cifar_root)])
    card = read_card(weights)
    assert card["test_acc"] == pytest.approx(trained_card["test_acc"]) and card["test_images"] == 20
    assert f"{card['test_acc']:.2f}% on 20 test images" in out
    model = load_cached_teacher(TeacherCard.read(weights.with_suffix(".json")), get_dataset("cifar10"),
                                torch.device("cpu"))
    assert_same_state(model.state_dict(), read_state_dict(path))
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def _save_pt(key_prefix: str, wrapper: str | None, suffix: str) -> Callable[[dict[str, torch.Tensor], Path], Path]:
    def save(state: dict[str, torch.Tensor], folder: Path) -> Path:
        inner = {f"{key_prefix}{k}": v for k, v in state.items()}
        path = folder / f"teacher{suffix}"
        torch.save({wrapper: inner, "epoch": 7, "optimizer": {"lr": 0.1}} if wrapper else inner, path)
        return path
    return save


def _save_safetensors(key_prefix: str) -> Callable[[dict[str, torch.Tensor], Path], Path]:
    def save(state: dict[str, torch.Tensor], folder: Path) -> Path:
        path = folder / "teacher.safetensors"
        save_file({f"{key_prefix}{k}": v.contiguous() for k, v in state.items()}, str(path))
        return path
    return save


FORMATS = {
    "bare .pt": _save_pt("", None, ".pt"),
    "state_dict wrapper .pth": _save_pt("", "state_dict", ".pth"),
    "model wrapper with module. prefix": _save_pt("module.", "model", ".pt"),
    "model. prefix .ckpt": _save_pt("model.", None, ".ckpt"),
    "safetensors": _save_safetensors(""),
    "safetensors with module. prefix": _save_safetensors("module."),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_import_reads_every_checkpoint_format(fmt: str, tmp_path: Path) -> None:
    state = random_state("wrn16_1", 10, seed=list(FORMATS).index(fmt) + 1)
    file = FORMATS[fmt](state, tmp_path)
    before = card_files()
    out = ok(["teacher", "import", str(file), "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu"])
    [weights] = [p for p in card_files() - before if p.suffix == ".pt"]
    assert_same_state(read_state_dict(weights), state)
    card = read_card(weights)
    assert card["source"] == f"imported:{file.resolve()}" and card["source_sha256"] == file_sha256(file)
    assert "accuracy not measured" in out


# --------------------------------------------------------------------------- refused imports


def _wrong_classes(folder: Path) -> Path:
    path = folder / "cifar100_teacher.pt"
    torch.save({"state_dict": random_state("wrn16_1", 100, 0)}, path)
    return path


def _wrong_arch(folder: Path) -> Path:
    path = folder / "resnet18.pt"
    torch.save(random_state("resnet18", 10, 0), path)
    return path


def _text_file(folder: Path) -> Path:
    path = folder / "x.pt"
    path.write_text("these are not the weights you are looking for\n")
    return path


def _pickled_object(folder: Path) -> Path:
    path = folder / "with_args.pt"
    torch.save({"state_dict": random_state("wrn16_1", 10, 0), "args": argparse.Namespace(lr=0.1)}, path)
    return path


def _plain_pickle(folder: Path) -> Path:
    path = folder / "plain.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weights": argparse.Namespace(depth=16)}, fh)
    return path


def _bad_safetensors(folder: Path) -> Path:
    path = folder / "broken.safetensors"
    path.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken}")
    return path


def _no_tensors(folder: Path) -> Path:
    path = folder / "meta_only.pt"
    torch.save({"epoch": 3, "config": {"arch": "wrn16_1"}}, path)
    return path


REFUSED = {
    "wrong class count": (_wrong_classes, ["has 100 classes but cifar10 has 10"]),
    "wrong architecture": (_wrong_arch, ["resnet18.pt does not fit wrn16_1"]),
    "text file named .pt": (_text_file, ["x.pt is not a readable PyTorch (weights_only) checkpoint"]),
    "pickle with a non-tensor object": (_pickled_object, ["is not a readable PyTorch (weights_only) checkpoint"]),
    "plain pickle": (_plain_pickle, ["is not a readable PyTorch (weights_only) checkpoint"]),
    "broken safetensors": (_bad_safetensors, ["is not a readable safetensors checkpoint"]),
    "no tensors": (_no_tensors, ["holds no state dict"]),
    "missing file": (lambda folder: folder / "absent.pt", ["absent.pt does not exist"]),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_imports_are_one_line_and_cache_nothing(case: str, tmp_path: Path) -> None:
    make, pieces = REFUSED[case]
    file = make(tmp_path)
    before = card_files()
    one_line_error(["teacher", "import", str(file), "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu"],
                   *pieces)
    assert card_files() == before


# --------------------------------------------------------------------------- a 1000-class ImageNet teacher


def test_1000_class_teacher_is_restricted_to_imagenette(imported_imagenette, imagenet_checkpoint) -> None:
    _, full_state = imagenet_checkpoint
    card: TeacherCard = imported_imagenette["card"]
    assert card.restricted_from == 1000 and card.num_classes == 10 and card.arch == "tv_resnet18"
    assert card.test_images == 10 and card.test_acc is not None and 0 <= card.test_acc <= 100
    assert "restricted from 1000 classes" in imported_imagenette["out"]
    model = load_cached_teacher(card, get_dataset("imagenette"), torch.device("cpu"))
    state = model.state_dict()
    assert torch.equal(state["fc.weight"], full_state["fc.weight"][IMAGENETTE_ROWS])
    assert torch.equal(state["fc.bias"], full_state["fc.bias"][IMAGENETTE_ROWS])
    assert_same_state({k: v for k, v in state.items() if not k.startswith("fc.")},
                      {k: v for k, v in full_state.items() if not k.startswith("fc.")})
    # the restricted teacher's logits are the full model's logits of those classes
    full = torchvision.models.resnet18(num_classes=1000)
    full.load_state_dict(full_state)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), full.eval()(x)[:, IMAGENETTE_ROWS], atol=1e-5)


def test_1000_class_teacher_follows_a_classes_file_order(imagenet_checkpoint, tmp_path: Path) -> None:
    """`--dataset imagenet --classes FILE` keeps the head rows in the file's order, the order its labels use."""
    path, full_state = imagenet_checkpoint
    order = [5, 0, 3]
    classes = tmp_path / "classes.txt"
    classes.write_text("".join(f"{IMAGENETTE_WNIDS[i]}\n" for i in order))
    before = card_files()
    ok(["teacher", "import", str(path), "--dataset", "imagenet", "--classes", str(classes), "--arch", "tv_resnet18",
        "--device", "cpu"])
    [weights] = [p for p in card_files() - before if p.suffix == ".pt"]
    card = TeacherCard.read(weights.with_suffix(".json"))
    spec = dataset_spec("imagenet", classes=str(classes))
    assert card.dataset == spec.name and card.num_classes == 3 and card.restricted_from == 1000
    model = load_cached_teacher(card, spec, torch.device("cpu"))
    rows = [IMAGENETTE_ROWS[i] for i in order]
    assert torch.equal(model.state_dict()["fc.weight"], full_state["fc.weight"][rows])


def test_1000_class_teacher_is_refused_for_cifar10(imagenet_checkpoint) -> None:
    path, _ = imagenet_checkpoint
    one_line_error(["teacher", "import", str(path), "--dataset", "cifar10", "--arch", "tv_resnet18",
                    "--device", "cpu"], "has 1000 classes but cifar10 has 10")


# --------------------------------------------------------------------------- cards guard their weights


def test_a_card_whose_weights_changed_is_refused(tmp_path: Path) -> None:
    file = tmp_path / "teacher.pt"
    state = random_state("wrn16_1", 10, seed=42)
    torch.save(state, file)
    before = card_files()
    ok(["teacher", "import", str(file), "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu"])
    [weights] = [p for p in card_files() - before if p.suffix == ".pt"]
    card = TeacherCard.read(weights.with_suffix(".json"))
    spec = get_dataset("cifar10")
    load_cached_teacher(card, spec, torch.device("cpu"))  # intact: loads

    blob = torch.load(weights, weights_only=True)
    blob["state_dict"]["fc.bias"] += 1
    torch.save(blob, weights)  # same arch, same shapes: only the card can tell
    with pytest.raises(UserError, match="does not match its card") as excinfo:
        load_cached_teacher(card, spec, torch.device("cpu"))
    assert str(weights) in str(excinfo.value) and "\n" not in str(excinfo.value)

    weights.unlink()
    with pytest.raises(UserError, match="missing"):
        load_cached_teacher(card, spec, torch.device("cpu"))


# --------------------------------------------------------------------------- listing


def test_teachers_lists_the_cached_teachers(trained, imported_imagenette) -> None:
    out = ok(["teachers"])
    assert "cached teachers" in out
    trained_sha = read_card(trained[0])["sha256"][:12]
    card = imported_imagenette["card"]
    for piece in ("cifar10", "wrn16_1", "trained", "imagenette", "tv_resnet18", "imported", "(from 1000)",
                  trained_sha, card.sha256[:12]):
        assert piece in out, (piece, out)


def test_teachers_with_an_empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path))
    assert ok(["teachers"]).startswith(f"no cached teachers in {tmp_path / 'teachers'}")


# --------------------------------------------------------------------------- torchvision weights, offline


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network: torch.hub's download raises URLError, urlopen too, and the hub cache is an empty folder."""
    attempts: list[str] = []

    def no_download(url: str, *args: Any, **kwargs: Any) -> None:
        attempts.append(url)
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    def no_urlopen(url: Any, *args: Any, **kwargs: Any) -> None:
        attempts.append(str(getattr(url, "full_url", url)))
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    monkeypatch.setattr(torch.hub, "urlopen", no_urlopen)
    monkeypatch.setattr(urllib.request, "urlopen", no_urlopen)
    return attempts


def test_teacher_weights_without_network_names_teacher_import(offline: list[str]) -> None:
    assert not any(Path(torch.hub.get_dir()).rglob("*.pth"))
    before = card_files()
    line = one_line_error(["teacher", "import", "--dataset", "imagenette", "--arch", "tv_resnet18",
                           "--teacher-weights", "IMAGENET1K_V1", "--device", "cpu"],
                          "could not download", "IMAGENET1K_V1", "dfkd-bench teacher import", "--arch tv_resnet18")
    assert offline and offline[0].startswith("https://download.pytorch.org/models/resnet18")
    assert offline[0] in line  # the URL to fetch by hand
    assert card_files() == before


def test_unknown_weight_set_lists_the_choices(offline: list[str]) -> None:
    one_line_error(["teacher", "import", "--dataset", "imagenette", "--arch", "tv_resnet18",
                    "--teacher-weights", "IMAGENET1K_V9", "--device", "cpu"],
                   "'IMAGENET1K_V9' is not a resnet18 weight set", "choose from:", "IMAGENET1K_V1")
    assert offline == []
    one_line_error(["teacher", "import", "--dataset", "cifar10", "--arch", "wrn16_1",
                    "--teacher-weights", "IMAGENET1K_V1", "--device", "cpu"],
                   "needs a torchvision architecture", "tv_resnet18")
    one_line_error(["teacher", "import", "--dataset", "cifar10", "--arch", "wrn16_1", "--device", "cpu"],
                   "exactly one of FILE or --teacher-weights")
