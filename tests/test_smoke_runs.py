"""`run --smoke` end to end on tiny real-format data: every method on CIFAR-10 pickles with a smoke teacher,
MUSE on an Imagenette-layout folder with a 1000-class torchvision teacher restricted to its ten classes;
smoke rows are marked and left out of reports, and smoke teachers never serve real runs."""

from __future__ import annotations

import csv
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from dfkd_bench.options import RunConfig
from dfkd_bench.data import get_dataset
from dfkd_bench.data.imagenet_classes import IMAGENETTE_WNIDS
from dfkd_bench.resolve import resolve
from dfkd_bench.teachers import TeacherCard, find_cached, teacher_path
from cli_helpers import ok
from formats import write_imagenet_folder

pytestmark = [pytest.mark.filterwarnings("ignore::dfkd_bench.data.DataWarning"),
              pytest.mark.usefixtures("module_cache")]

METHODS = ("deepinversion", "fast", "nayer", "muse")
SMOKE_IMAGES = 8 * 3  # the smoke shrink: synth_batch 8 for SMOKE_ROUNDS = 3 rounds, whatever the ratio


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def smoke_teacher(cifar_root: Path) -> TeacherCard:
    """A wrn16_1 teacher from `teacher train --smoke` (a few steps) on the tiny CIFAR-10."""
    ok(["teacher", "train", "--dataset", "cifar10", "--arch", "wrn16_1", "--data-root", str(cifar_root), "--smoke",
        "--device", "cpu", "--quiet"])
    return TeacherCard.read(teacher_path("cifar10", "wrn16_1", 0, smoke=True).with_suffix(".json"))


def smoke_args(out: Path, root: Path) -> list[str]:
    return ["run", "--smoke", "--methods", ",".join(METHODS), "--dataset", "cifar10", "--data-root", str(root),
            "--teacher", "wrn16_1", "--student", "resnet8", "--device", "cpu", "--out", str(out)]


@pytest.fixture(scope="module")
def cifar_smoke_run(tmp_path_factory: pytest.TempPathFactory, smoke_teacher: TeacherCard, cifar_root: Path) -> Path:
    out = tmp_path_factory.mktemp("smoke") / "results"
    ok(smoke_args(out, cifar_root) + ["--quiet"])
    return out


# --------------------------------------------------------------------------- every method on CIFAR-10 pickles


def test_smoke_run_of_every_method(cifar_smoke_run: Path, smoke_teacher: TeacherCard) -> None:
    rows = rows_of(cifar_smoke_run)
    assert [r["method"] for r in rows] == list(METHODS)
    for row in rows:
        assert row["status"] == "ok" and row["error"] == "", row
        assert row["smoke"] == "1" and row["dataset"] == "cifar10"
        assert (row["teacher"], row["student"]) == ("wrn16_1", "resnet8")
        assert row["teacher_acc"] == f"{smoke_teacher.test_acc:.2f}"  # the cached smoke teacher
        assert int(row["n_synthetic"]) == SMOKE_IMAGES
        assert 0 <= float(row["student_acc"]) <= 100
        assert row["resolution"] == ("16" if row["method"] == "muse" else "32")  # MUSE: half the input size
        assert (cifar_smoke_run / "runs" / row["run_id"] / "student.pt").is_file()


def test_smoke_output_says_so_and_reports_leave_smoke_rows_out(cifar_smoke_run: Path, cifar_root: Path,
                                                                smoke_teacher: TeacherCard, tiny_args,
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    out = ok(smoke_args(cifar_smoke_run, cifar_root))  # without --quiet: finished, so read back, not redone
    assert "smoke run" in out
    assert out.count("[cached]") == len(METHODS)

    report = ok(["report", "--out", str(cifar_smoke_run)])
    lines = [line for line in report.splitlines() if line.strip()]
    assert lines[0].startswith("| method |") and len(lines) == 2, report  # a header and no rows
    assert not any(m in report for m in METHODS)
    csv_lines = ok(["report", "--out", str(cifar_smoke_run), "--format", "csv"]).splitlines()
    assert len(csv_lines) == 1 and csv_lines[0].startswith("method,")

    # a real (non-smoke) run next to them is reported, the smoke rows still are not; it imports the smoke
    # teacher's weights into a cache of its own, so this module's cache keeps only the smoke teacher
    teacher_file = smoke_teacher.path
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path / "cache"))
    ok(["run", "--methods", "fast", "--dataset", "cifar10", "--data-root", str(cifar_root), "--ratio", "1.6",
        "--teacher", "wrn16_1", "--student", "resnet8", "--teacher-checkpoint", teacher_file, "--device", "cpu",
        "--out", str(cifar_smoke_run), "--quiet", *tiny_args("fast")])
    rows = rows_of(cifar_smoke_run)
    assert len(rows) == len(METHODS) + 1 and rows[-1]["smoke"] == "" and rows[-1]["status"] == "ok"
    report = ok(["report", "--out", str(cifar_smoke_run)])
    body = [line for line in report.splitlines()[2:] if line.startswith("| ")]  # footnotes may follow
    assert len(body) == 1 and body[0].startswith("| fast | cifar10 | wrn16_1 | resnet8 |"), report


def test_smoke_teachers_never_serve_real_runs(smoke_teacher: TeacherCard, cifar_root: Path) -> None:
    spec = get_dataset("cifar10")
    assert smoke_teacher.smoke and Path(smoke_teacher.path).is_file()
    assert find_cached(spec, "wrn16_1", smoke=True).path == smoke_teacher.path
    assert find_cached(spec, "wrn16_1", smoke=False) is None
    base = RunConfig(method="fast", dataset="cifar10", teacher="wrn16_1", student="resnet8", device="cpu",
                     data_root=str(cifar_root))
    real, smoke = resolve(base), resolve(replace(base, smoke=True))
    assert real.run_id != smoke.run_id  # a smoke row never stands in for a finished real run
    assert smoke.n_synthetic == SMOKE_IMAGES and real.n_synthetic == round(0.1 * 20)


# --------------------------------------------------------------------------- MUSE on Imagenette, 1000-class teacher


@pytest.fixture(scope="module")
def nette_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_imagenet_folder(tmp_path_factory.mktemp("imagenette"), IMAGENETTE_WNIDS, per_class=1,
                                 val_per_class=1)


@pytest.fixture(scope="module")
def tv_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """torchvision resnet18 with 1000 classes: as a DDP .pth ({"model": {"module.*": ...}}) and as .safetensors."""
    folder = tmp_path_factory.mktemp("tv")
    torch.manual_seed(0)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    pth = folder / "resnet18_ddp.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 89}, pth)
    safetensors = folder / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(safetensors))
    return {"pth": pth, "safetensors": safetensors}


@pytest.fixture(scope="module")
def imported_tv_teacher(tv_checkpoints: dict[str, Path], nette_root: Path) -> TeacherCard:
    out = ok(["teacher", "import", str(tv_checkpoints["pth"]), "--dataset", "imagenette", "--arch", "tv_resnet18",
              "--data-root", str(nette_root), "--device", "cpu"])
    assert "restricted from 1000 classes" in out
    card = find_cached(get_dataset("imagenette"), "tv_resnet18")
    assert card is not None and card.restricted_from == 1000
    return card


def muse_args(out: Path, root: Path, *extra: str) -> list[str]:
    return ["run", "--smoke", "--methods", "muse", "--dataset", "imagenette", "--data-root", str(root),
            "--teacher", "tv_resnet18", "--student", "tv_resnet18", "--device", "cpu", "--out", str(out),
            "--quiet", *extra]


# A cheap MUSE: generated at 32 px and shown to teacher and student as generated (not upsampled to 224),
# so the smoke rounds cost little; evaluation is still on the 224 px Imagenette split.
CHEAP = ("--resolution", "32", "--set", "muse.feed=native")


# the .safetensors loader itself is covered quickly by test_teachers_import; its full smoke run is slow-marked
@pytest.mark.parametrize("teacher", ["imported .pth",
                                     pytest.param("--teacher-checkpoint .safetensors", marks=pytest.mark.slow)])
def test_muse_smoke_on_imagenette_with_a_1000_class_teacher(teacher: str, tmp_path: Path, nette_root: Path,
                                                            imported_tv_teacher: TeacherCard,
                                                            tv_checkpoints: dict[str, Path]) -> None:
    out = tmp_path / "results"
    extra = list(CHEAP)
    if teacher.startswith("--teacher-checkpoint"):
        extra += ["--teacher-checkpoint", str(tv_checkpoints["safetensors"])]
    ok(muse_args(out, nette_root, *extra))
    [row] = rows_of(out)
    assert row["status"] == "ok" and row["error"] == "", row
    assert (row["method"], row["dataset"], row["teacher"], row["student"]) == ("muse", "imagenette", "tv_resnet18",
                                                                              "tv_resnet18")
    assert row["smoke"] == "1" and row["resolution"] == "32" and int(row["n_synthetic"]) == SMOKE_IMAGES
    # the same weights either way, measured on the same ten val images
    assert row["teacher_acc"] == f"{imported_tv_teacher.test_acc:.2f}"
    student = torch.load(out / "runs" / row["run_id"] / "student.pt", weights_only=True)
    assert student["num_classes"] == 10 and student["state_dict"]["fc.weight"].shape == (10, 512)


@pytest.mark.slow
def test_muse_smoke_on_imagenette_at_its_default_resolution(tmp_path: Path, nette_root: Path,
                                                            imported_tv_teacher: TeacherCard) -> None:
    """MUSE's default for 224 px: generate at 112, upsample to 224 for teacher and student (a minute or two
    on one CPU thread)."""
    out = tmp_path / "results"
    ok(muse_args(out, nette_root))
    [row] = rows_of(out)
    assert row["status"] == "ok" and row["resolution"] == "112" and row["smoke"] == "1", row
    assert row["teacher_acc"] == f"{imported_tv_teacher.test_acc:.2f}"
