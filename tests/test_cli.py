"""The command line: listings, a one-file method through --plugin (the README's example), and bad
input, which must exit 2 with exactly one `error:` line on stderr, no traceback, nothing lost."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfkd_bench.cli import main
from dfkd_bench.models import create_model

TESTS = Path(__file__).resolve().parent
EXAMPLE_PLUGIN = TESTS / "example_plugin.py"
_SCRIPT = Path(sys.executable).parent / "dfkd-bench"
# The installed console script next to this interpreter (the venv's), else the module itself.
COMMAND = [str(_SCRIPT)] if _SCRIPT.is_file() else [sys.executable, "-m", "dfkd_bench.cli"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """main(args) in-process: (exit status, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def rows_of(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- listings


def test_listings(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(["methods"], capsys)
    names = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert code == 0 and {"deepinversion", "fast"} <= set(names)
    assert any(line.startswith("fast") and "Fast" in line for line in out.splitlines())  # with its description
    code, out, _ = run_cli(["datasets"], capsys)
    assert code == 0 and {"digits", "cifar10", "imagenette"} <= {ln.split()[0] for ln in out.splitlines()}
    code, out, _ = run_cli(["models"], capsys)
    assert code == 0 and {"digits_resnet8", "digits_resnet8_slim"} <= {ln.split()[0] for ln in out.splitlines()}


# --------------------------------------------------------------------------- plugins


@pytest.mark.usefixtures("clean_methods")
def test_example_plugin_is_listed_and_runs(tmp_path: Path, digits_teacher, tiny_args,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(["--plugin", str(EXAMPLE_PLUGIN), "methods"], capsys)
    assert code == 0 and err == ""
    assert any(line.split()[0] == "teacher_noise" and "Teacher-guided noise" in line for line in out.splitlines())

    results = tmp_path / "results"
    code, out, err = run_cli(["run", "--plugin", str(EXAMPLE_PLUGIN), "--methods", "teacher_noise",
                              "--ratio", "0.05", "--device", "cpu", "--out", str(results), "--quiet",
                              *tiny_args("teacher_noise")], capsys)
    assert code == 0, err
    [row] = rows_of(results)
    assert row["method"] == "teacher_noise" and row["status"] == "ok" and row["n_synthetic"] == "72"
    assert 0 <= float(row["student_acc"]) <= 100
    assert (results / "runs" / row["run_id"] / "student.pt").is_file()


@pytest.mark.usefixtures("clean_methods")
def test_example_plugin_synthesis_follows_the_teacher(digits_teacher, digits_data) -> None:
    """The example's images move toward their labels: the teacher's CE falls with more steps."""
    from dfkd_bench.config import resolve_hparams
    from dfkd_bench.engine import MethodContext
    from dfkd_bench.plugins import METHODS, load_plugin

    load_plugin(EXAMPLE_PLUGIN)
    cls = METHODS.get("teacher_noise")
    teacher, _ = digits_teacher
    spec, _ = digits_data
    losses = {}
    for steps in (1, 15):
        ctx = MethodContext.create(teacher, create_model("digits_resnet8_slim", 10), spec, 0, resolutions=(16,))
        batch = cls(ctx, resolve_hparams(cls.Hparams, "digits", {"steps": steps}, "teacher_noise")).synthesize(12)
        assert batch.images.shape == (12, 3, 16, 16) and 0 <= batch.images.min() and batch.images.max() <= 1
        losses[steps] = batch.loss
    assert losses[15] < 0.5 * losses[1], losses


@pytest.mark.usefixtures("clean_methods")
def test_a_one_file_plugin_written_by_a_user(tmp_path: Path, digits_teacher,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    plugin = tmp_path / "gray.py"
    plugin.write_text('''
from dataclasses import dataclass
import torch
from dfkd_bench import Method, MethodHparams, SyntheticBatch, register_method
from dfkd_bench.engine import balanced_labels


@dataclass
class GrayHparams(MethodHparams):
    level: float = 0.5


@register_method("gray")
class Gray(Method):
    """Flat gray images with balanced labels."""
    Hparams = GrayHparams

    def synthesize(self, n, round=None):
        c = self.ctx
        x = torch.full((n, 3, c.resolution, c.resolution), self.hp.level)
        return SyntheticBatch(x, balanced_labels(n, c.spec.num_classes, c.generator))
''')
    code, out, _ = run_cli(["--plugin", str(plugin), "methods"], capsys)
    assert code == 0 and "gray" in out.split() and "Flat gray images with balanced labels." in out
    results = tmp_path / "results"
    code, _, err = run_cli(["run", "--plugin", str(plugin), "--methods", "gray", "--ratio", "0.02",
                            "--resolution", "16", "--device", "cpu", "--out", str(results), "--quiet",
                            "--set", "gray.level=0.25", "--set", "gray.kd_steps=2", "--set", "gray.synth_batch=32"],
                           capsys)
    assert code == 0, err
    [row] = rows_of(results)
    assert (row["method"], row["status"], row["resolution"]) == ("gray", "ok", "16")


def test_console_script_lists_a_plugin(tmp_path: Path) -> None:
    """The installed `dfkd-bench` command in a fresh process (one torch import: a few seconds)."""
    result = subprocess.run([*COMMAND, "--plugin", str(EXAMPLE_PLUGIN), "methods"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "teacher_noise" in result.stdout.split() and "fast" in result.stdout.split()


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def existing_results(tmp_path_factory: pytest.TempPathFactory, digits_teacher) -> Path:
    """A results folder with a finished run (the example method, tiny budget) for bad commands to spare."""
    from dfkd_bench import RunConfig, load_plugin
    from dfkd_bench.plugins import METHODS
    from dfkd_bench.runner import run_many

    out = tmp_path_factory.mktemp("existing") / "results"
    with METHODS.snapshot():
        load_plugin(EXAMPLE_PLUGIN)
        run_many([RunConfig(method="teacher_noise", ratio=0.02, device="cpu",
                            overrides={"steps": "1", "kd_steps": "2", "synth_batch": "32"})], out)
    assert rows_of(out)[0]["status"] == "ok"
    return out


@pytest.fixture(scope="module")
def bad_checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Teacher checkpoints that do not fit the digits teacher (digits_resnet8, 10 classes): in the
    package's format (with arch and class count) and as a bare state_dict."""
    root = tmp_path_factory.mktemp("checkpoints")
    slim, five = create_model("digits_resnet8_slim", 10), create_model("digits_resnet8", 5)
    files = {
        "arch_card": {"arch": "digits_resnet8_slim", "dataset": "digits", "num_classes": 10,
                      "state_dict": slim.state_dict()},
        "arch_bare": slim.state_dict(),
        "classes_card": {"arch": "digits_resnet8", "dataset": "digits", "num_classes": 5,
                         "state_dict": five.state_dict()},
        "classes_bare": five.state_dict(),
    }
    paths = {}
    for name, blob in files.items():
        paths[name] = root / f"{name}.pt"
        torch.save(blob, paths[name])
    paths["not_torch"] = root / "not_torch.pt"
    paths["not_torch"].write_text("hello")
    return paths


BAD_INPUTS = {
    # name: (extra arguments, substrings the error line must contain)
    "unknown method": (["--methods", "nope"], ["unknown method 'nope'", "choose from:", "deepinversion", "fast"]),
    "empty methods": (["--methods", ","], ["choose from:", "fast"]),
    "unknown dataset": (["--dataset", "nope"], ["unknown dataset 'nope'", "choose from:", "cifar10", "digits", "imagenette"]),
    "unknown teacher": (["--teacher", "nope"], ["unknown model 'nope'", "choose from:", "digits_resnet8"]),
    "unknown student": (["--student", "nope"], ["unknown model 'nope'", "choose from:", "digits_resnet8_slim"]),
    "ratio zero": (["--ratio", "0"], ["--ratio must be > 0"]),
    "ratio negative": (["--ratio", "-0.1"], ["--ratio must be > 0", "-0.1"]),
    "ratio not a number": (["--ratio", "half"], ["--ratio", "half"]),
    "set without =": (["--set", "fast.g_steps"], ["malformed", "METHOD.PARAM=VALUE"]),
    "set without method": (["--set", "g_steps=3"], ["malformed", "METHOD.PARAM=VALUE"]),
    "set without value": (["--set", "fast.g_steps="], ["malformed"]),
    "set unknown parameter": (["--set", "fast.nope=1"], ["fast has no parameter 'nope'", "choose from:", "g_steps"]),
    "set bad int": (["--set", "fast.g_steps=abc"], ["fast.g_steps=abc", "expected integer"]),
    "set bad float": (["--set", "fast.lr_g=fast"], ["fast.lr_g=fast", "expected number"]),
    "set bad bool": (["--set", "fast.keep_best=perhaps"], ["expected boolean"]),
    "set other method": (["--set", "deepinversion.iterations=5"],
                         ["names method 'deepinversion'", "not in this run", "choose from: fast"]),
    "missing data root": (["--data-root", "{tmp}/no/such/dir"], ["data root", "does not exist"]),
    "unknown device": (["--device", "tpu"], ["unknown device 'tpu'", "choose from: auto, cpu, cuda"]),
    "resolution out of range": (["--resolution", "2"], ["--resolution 2 is out of range"]),
    "resolution zero": (["--resolution", "0"], ["--resolution 0 is out of range"]),
    "resolution not an integer": (["--resolution", "16,x"], ["--resolution: expected an integer, got 'x'"]),
    "multi-resolution for fast": (["--multi-resolution", "16,32"],
                                  ["--multi-resolution 16,32: fast generates at one resolution"]),
    "missing teacher checkpoint": (["--teacher-checkpoint", "{tmp}/none.pt"], ["does not exist"]),
    "teacher checkpoint wrong arch (card)": (["--teacher-checkpoint", "{arch_card}"],
                                             ["does not fit digits_resnet8"]),
    "teacher checkpoint wrong arch (bare)": (["--teacher-checkpoint", "{arch_bare}"],
                                             ["does not fit digits_resnet8"]),
    "teacher checkpoint wrong classes (card)": (["--teacher-checkpoint", "{classes_card}"],
                                                ["has 5 classes but digits has 10"]),
    "teacher checkpoint wrong classes (bare)": (["--teacher-checkpoint", "{classes_bare}"],
                                                ["has 5 classes but digits has 10"]),
    "teacher checkpoint not torch": (["--teacher-checkpoint", "{not_torch}"], ["not a readable PyTorch"]),
    "missing plugin": (["--plugin", "{tmp}/nothing.py"], ["--plugin", "no such file"]),
    "broken plugin": (["--plugin", "{broken}"], ["failed to import", "ZeroDivisionError"]),
    "unknown option": (["--nope"], ["No such option", "--nope"]),
    "out is a file": (["--out", "{broken}"], ["broken.py is a file, not a folder"]),
    "out under a file": (["--out", "{broken}/results"], ["broken.py is a file, not a folder"]),
}


def test_repeated_and_empty_method_names_warn_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, stderr = run_cli(["run", "--methods", "fast,,FAST,nayer", "--dry-run"], capsys)
    assert code == 0, stderr
    assert stderr.splitlines() == ["warning: --methods: dropped repeated fast and empty names; running fast,nayer"]
    assert stdout.count(": fast digits") == 1 and stdout.count(": nayer digits") == 1


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_error_line(case: str, existing_results: Path, bad_checkpoints: dict[str, Path],
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    shutil.copytree(existing_results, out)
    before = files_of(out)
    broken = tmp_path / "broken.py"
    broken.write_text("x = 1 / 0\n")
    names = {**{k: str(v) for k, v in bad_checkpoints.items()}, "tmp": str(tmp_path), "broken": str(broken)}
    extra, expected = BAD_INPUTS[case]
    extra = [a.format(**names) for a in extra]
    args = ["run", "--methods", "fast", "--ratio", "0.02", "--device", "cpu", "--out", str(out), "--quiet"]
    # a later option of the same name wins in click, so the bad value replaces the default above
    code, stdout, stderr = run_cli(args + extra, capsys)
    lines = stderr.splitlines()
    assert code == 2, (stdout, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    assert "Traceback" not in stdout + stderr
    assert files_of(out) == before  # nothing already written is lost or changed


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_device_cuda_without_cuda(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["run", "--methods", "fast", "--device", "cuda", "--out", str(tmp_path)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("error: --device cuda: no CUDA device") and "choose from: auto, cpu" in err
    assert list(tmp_path.iterdir()) == []


def test_teacher_train_rejects_bad_epochs(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(["teacher", "train", "--epochs", "0"], capsys)
    assert code == 2 and err == "error: --epochs must be > 0, got 0\n"
    code, _, err = run_cli(["teacher", "train", "--arch", "nope"], capsys)
    assert code == 2 and err.startswith("error: unknown model 'nope'; choose from:") and err.count("\n") == 1


def test_bad_input_in_a_fresh_process(tmp_path: Path) -> None:
    """The real console script: exit status 2, one line on stderr, no warnings, no traceback."""
    result = subprocess.run([*COMMAND, "run", "--methods", "fast", "--set", "fast.g_steps=two",
                             "--out", str(tmp_path / "results")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "error: --set fast.g_steps=two: expected integer\n"
    assert not (tmp_path / "results").exists()
