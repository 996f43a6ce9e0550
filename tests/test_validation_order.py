"""What the arguments alone decide is decided before any data is read, and each warning is said once.

The data root is an Imagenette copy whose parachute folder has its known alias name, so every scan of
it warns; a refusal that needed no data must come as the only line, with no warning before it."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest
import torch

from cli_helpers import one_line_error, own_cache, run_cli
from dfkd_bench.data.imagenet_classes import FOLDER_ALIASES, IMAGENETTE_WNIDS
from dfkd_bench.models import create_model
from formats import write_imagenet_folder

PARACHUTE, ALIAS = next(iter(FOLDER_ALIASES.items()))
ALIAS_WARNING = f"no folder {PARACHUTE}; reading {ALIAS}"


@pytest.fixture(scope="module")
def aliased_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A one-image-a-class Imagenette folder whose parachute class sits under its alias name."""
    root = write_imagenet_folder(tmp_path_factory.mktemp("nette") / "imagenette", IMAGENETTE_WNIDS,
                                 per_class=1, val_per_class=1, size=(40, 32))
    for split in ("train", "val"):
        (root / split / PARACHUTE).rename(root / split / ALIAS)
    return root


@pytest.fixture(scope="module")
def tv_resnet18_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 10-class tv_resnet18 state dict: a teacher file that fits imagenette."""
    path = tmp_path_factory.mktemp("teacher") / "tv_resnet18.pt"
    torch.save(create_model("tv_resnet18", 10).state_dict(), path)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path) -> Iterator[Path]:
    with own_cache(tmp_path / "cache") as cache:
        yield cache


def run_args(root: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--methods", "fast", "--dataset", "imagenette", "--data-root", str(root), "--device", "cpu",
            "--out", str(out), "--quiet", *extra]


def test_the_root_warns_once_per_command(aliased_root: Path, tmp_path: Path) -> None:
    """The folder is scanned for train/ and val/, and again to count: the alias is said once."""
    code, out, err = run_cli(run_args(aliased_root, tmp_path / "results", "--methods", "fast,nayer",
                                      "--ratio", "0.1,0.2", "--teacher", "tv_resnet18", "--dry-run"))
    assert code == 0, err
    lines = err.splitlines()
    assert len(lines) == len(set(lines)), err
    assert [line for line in lines if ALIAS_WARNING in line] == \
        [f"warning: {aliased_root}: {ALIAS_WARNING} for that class (a known alias)"]
    assert out.count("imagenette ratio=") == 4


@pytest.mark.parametrize("extra, pieces", [
    (["--teacher", "resnet18", "--teacher-weights", "IMAGENET1K_V1"],
     ["--teacher-weights needs a torchvision architecture", "choose --teacher from:", "tv_resnet18"]),
    (["--teacher", "tv_resnet18", "--teacher-weights", "NOPE"], ["--teacher-weights 'NOPE'", "IMAGENET1K_V1"]),
    (["--pair", "tv_resnet18:tv_resnet18", "--pair", "resnet18:tv_resnet18", "--teacher-weights", "IMAGENET1K_V1"],
     ["choose --teacher from:"]),
    (["--teacher", "tv_resnet34", "--teacher-checkpoint", "{checkpoint}"],
     ["does not fit tv_resnet34", "pass the --teacher it was trained as"]),
    (["--label-embeddings", "{tmp}/none.npz"], ["--label-embeddings", "does not exist"]),
    (["--protocol", "paper", "--methods", "dfad"], ["--protocol paper: dfad has no reference schedule for imagenette"]),
    (["--resolution", "18"], ["generation resolution 18", "multiples of 4"]),
])
def test_run_refuses_arguments_before_reading_the_data(aliased_root: Path, tv_resnet18_checkpoint: Path,
                                                       tmp_path: Path, extra: list[str], pieces: list[str]) -> None:
    """The refusal is the only line: no data warning came first, and nothing was written."""
    names = {"checkpoint": str(tv_resnet18_checkpoint), "tmp": str(tmp_path)}
    out = tmp_path / "results"
    one_line_error(run_args(aliased_root, out, *(a.format(**names) for a in extra)), *pieces)
    assert not out.exists()


def test_teacher_commands_refuse_arguments_before_reading_the_data(aliased_root: Path,
                                                                   tv_resnet18_checkpoint: Path) -> None:
    data = ["--dataset", "imagenette", "--data-root", str(aliased_root), "--device", "cpu"]
    one_line_error(["teacher", "train", "--epochs", "0", *data], "--epochs must be > 0")
    one_line_error(["teacher", "import", str(tv_resnet18_checkpoint), "--arch", "tv_resnet34", *data],
                   "does not fit tv_resnet34", "pass the --arch it was trained as")
    one_line_error(["teacher", "import", "--teacher-weights", "IMAGENET1K_V1", "--arch", "resnet18", *data],
                   "choose --arch from:")


def test_a_teacher_import_reads_the_data_and_warns_once(aliased_root: Path, tv_resnet18_checkpoint: Path) -> None:
    """Opening the root scans val/ and train/, measuring scans val/ again: one warning line."""
    code, out, err = run_cli(["teacher", "import", str(tv_resnet18_checkpoint), "--arch", "tv_resnet18",
                              "--dataset", "imagenette", "--data-root", str(aliased_root), "--device", "cpu"])
    assert code == 0, err
    assert err == f"warning: {aliased_root}: {ALIAS_WARNING} for that class (a known alias)\n"
    assert "on 10 test images" in out
