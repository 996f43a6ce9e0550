"""Every message the command line gives names options by their current spelling.

The options are read from the click commands themselves: an option's first long spelling is current,
later ones and hidden options (`--sweep-resolutions`, generated from `options.DEPRECATED`) are old spellings, which a
message may name only where it says they are deprecated. Messages are collected twice: from the
source (string literals of every raise, warning, echo, print and log call) and from bad invocations
run through click's CliRunner, where each option must also belong to the command that was run (or to
a command the message quotes)."""

from __future__ import annotations

import ast
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import click
import pytest
import torch
from click.testing import CliRunner

import dfkd_bench
from dfkd_bench.cli import cli
from dfkd_bench.models import create_model

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
MESSAGE_CALLS = {"warn", "echo", "print", "log", "info", "warning", "error", "debug"}
PACKAGE = Path(dfkd_bench.__file__).resolve().parent
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted((PACKAGE.parent / "methods").glob("*.py"))


@dataclass
class Spellings:
    """Each command's current option spellings and old ones."""

    current: dict[str, set[str]] = field(default_factory=dict)  # command path -> options
    old: set[str] = field(default_factory=set)

    @property
    def every_current(self) -> set[str]:
        return set().union(*self.current.values())

    def problems(self, text: str, commands: set[str] | None = None) -> list[str]:
        """The options `text` names that no command (or none of `commands`) defines by that spelling;
        an old spelling passes only in a message that calls it deprecated."""
        allowed = self.every_current if commands is None else set().union(*(self.current[c] for c in commands))
        bad = []
        for flag in FLAG.findall(text):
            if flag in allowed or (flag in self.old and "deprecated" in text):
                continue
            bad.append(f"{flag} in {text!r}")
        return bad

    def quoted_commands(self, text: str) -> set[str]:
        """Commands a message quotes (`dfkd-bench teacher import ...`, `` `plot all ...` ``)."""
        return {path for path in self.current if f"dfkd-bench {path} " in text or f"`{path} " in text}


def _walk(command: click.Command, path: str, spellings: Spellings) -> None:
    ctx = click.Context(command, info_name=path or "dfkd-bench")
    options = [p for p in command.get_params(ctx) if isinstance(p, click.Option)]
    current = spellings.current.setdefault(path, set())
    for option in options:
        long = [o for o in option.opts + option.secondary_opts if o.startswith("--")]
        if option.hidden:
            spellings.old.update(long)
        elif long:
            current.add(long[0])
            current.update(o for o in option.secondary_opts if o.startswith("--"))
            spellings.old.update(o for o in option.opts[1:] if o.startswith("--"))
    for name, sub in getattr(command, "commands", {}).items():
        _walk(sub, f"{path} {name}".strip(), spellings)


@pytest.fixture(scope="module")
def spellings() -> Spellings:
    found = Spellings()
    _walk(cli, "", found)
    return found


# --------------------------------------------------------------------------- messages in the source


def _texts(node: ast.AST) -> Iterator[str]:
    """String literals under `node`; an f-string as its constant parts joined by `{}`."""
    if isinstance(node, ast.JoinedStr):
        yield "".join(v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)
        return
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
        return
    for child in ast.iter_child_nodes(node):
        yield from _texts(child)


def _is_message_call(call: ast.Call) -> bool:
    """A warning, echo, print or log call, or an exception built for raising (`UserError(...)`)."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in MESSAGE_CALLS or name.endswith("Error")


def source_messages(source: str) -> list[tuple[int, str]]:
    """(line, text) of each string a raise, a warning, an echo, a print or a log call in `source` says."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found.update((node.lineno, t) for t in _texts(node.exc))
        elif isinstance(node, ast.Call) and _is_message_call(node):
            found.update((node.lineno, t) for arg in [*node.args, *node.keywords] for t in _texts(arg))
    return sorted(found)


def test_the_source_messages_name_current_options(spellings: Spellings) -> None:
    bad = [f"{path.relative_to(PACKAGE.parent)}:{line}: {problem}" for path in SOURCES
           for line, text in source_messages(path.read_text()) for problem in spellings.problems(text)]
    assert not bad, "\n".join(bad)


def test_the_check_catches_an_old_spelling(spellings: Spellings) -> None:
    """The checker itself: the old message of single-resolution methods (read from source as the test
    reads the package), a flag no command has, another command's flag, and the deprecated spellings
    that only a deprecation note may name."""
    assert {"--sweep-resolutions", "--resolutions"} <= spellings.old and "--resolution" in spellings.current["run"]
    old = ('raise UserError(f"--multi-resolution {x}: {cls.name} generates at one "\n'
           '                f"resolution; give one with --sweep-resolutions N")')
    [(line, text)] = source_messages(old)
    assert spellings.problems(text) == [f"--sweep-resolutions in {text!r}"]
    assert spellings.problems("choose --nope from: a, b")
    assert spellings.problems("choose --arch from: tv_resnet18", commands={"run"})
    assert not spellings.problems("choose --arch from: tv_resnet18", commands={"teacher import"})
    assert not spellings.problems("plot without KIND is the deprecated `plot --out RESULTS [--to FIGDIR]`")
    assert spellings.problems("--to belongs to `plot --out RESULTS --to FIGDIR`")


# --------------------------------------------------------------------------- messages of bad invocations


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Paths the invocations name: a plain file, a checkpoint of the wrong architecture, an empty folder."""
    root = tmp_path_factory.mktemp("flags")
    (root / "a_file").write_text("not a folder\n")
    (root / "empty").mkdir()
    torch.save(create_model("digits_resnet8_slim", 10).state_dict(), root / "slim.pt")
    return {"tmp": str(root), "file": str(root / "a_file"), "slim": str(root / "slim.pt"), "empty": str(root / "empty")}


RUN = ["run", "--methods", "fast", "--device", "cpu", "--out", "{tmp}/results", "--quiet"]
INVOCATIONS = {
    "unknown method": [*RUN, "--methods", "nope"],
    "repeated method": [*RUN, "--methods", "fast,,fast", "--dry-run"],
    "ratio zero": [*RUN, "--ratio", "0"],
    "ratio not a number": [*RUN, "--ratio", "half"],
    "missing data root": [*RUN, "--data-root", "{tmp}/no/such/dir"],
    "imagenette without a root": [*RUN, "--dataset", "imagenette"],
    "out is a file": [*RUN, "--out", "{file}"],
    "weights of a non-torchvision teacher": [*RUN, "--teacher", "resnet18", "--teacher-weights", "IMAGENET1K_V1"],
    "unknown weight set": [*RUN, "--teacher", "tv_resnet18", "--teacher-weights", "NOPE"],
    "checkpoint and weights": [*RUN, "--teacher-checkpoint", "{slim}", "--teacher-weights", "IMAGENET1K_V1"],
    "checkpoint of another arch": [*RUN, "--teacher-checkpoint", "{slim}"],
    "resolution out of range": [*RUN, "--resolution", "2"],
    "resolution not a multiple of 4": [*RUN, "--resolution", "18"],
    "several resolutions for fast": [*RUN, "--multi-resolution", "16,32"],
    "bank too large": [*RUN, "--methods", "deepinversion", "--ratio", "1e9"],
    "malformed set": [*RUN, "--set", "fast.g_steps"],
    "set for another method": [*RUN, "--set", "nayer.g_steps=2"],
    "malformed pair": [*RUN, "--pair", "resnet34"],
    "json without dry run": [*RUN, "--format", "json"],
    "paper protocol without reference": [*RUN, "--methods", "dfad", "--protocol", "paper"],
    "missing label embeddings": [*RUN, "--label-embeddings", "{tmp}/none.npz"],
    "unknown tracker": [*RUN, "--log", "nope"],
    "bad time budget": [*RUN, "--time-budget", "-1"],
    "unknown device": [*RUN, "--device", "tpu"],
    "download of imagenette": [*RUN, "--dataset", "imagenette", "--download", "--data-root", "{tmp}/d"],
    "auto batch over processes": [*RUN, "--auto-batch", "--nproc", "2", "--dry-run"],
    "teacher epochs": ["teacher", "train", "--epochs", "0"],
    "teacher import without a source": ["teacher", "import", "--dataset", "digits", "--arch", "digits_resnet8"],
    "teacher import of another arch": ["teacher", "import", "{slim}", "--dataset", "digits",
                                       "--arch", "digits_resnet8"],
    "teacher import weights of a non-torchvision arch": ["teacher", "import", "--teacher-weights", "IMAGENET1K_V1",
                                                         "--dataset", "digits", "--arch", "digits_resnet8"],
    "sweep wait without submitit": ["sweep", "{tmp}/none.toml", "--wait"],
    "sweep shard": ["sweep", "{tmp}/none.toml", "--shard", "3/2"],
    "sweep submitit with trackers": ["sweep", "{tmp}/none.toml", "--launcher", "submitit", "--log", "tensorboard"],
    "report with both folders": ["report", "--results", "{empty}", "--out", "{empty}"],
    "report without runs": ["report", "--results", "{empty}"],
    "table without runs": ["table", "--results", "{empty}"],
    "plot with the old figure folder": ["plot", "curves", "--to", "{empty}"],
    "embed labels without classes": ["embed-labels", "--out", "{tmp}/e.npz"],
    "merge into a file": ["merge", "{empty}", "--out", "{file}"],
}


def _command_path(args: list[str], commands: set[str]) -> str:
    """The longest command path the arguments start with (`teacher import`, `run`)."""
    words = [a for a in args[:2] if not a.startswith("-")]
    return next(p for p in (" ".join(words[:n]) for n in (2, 1)) if p in commands)


def invocation_messages(args: list[str]) -> list[str]:
    """What a user sees from `args`: the output, the error (a refusal) and every warning."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, args)
    texts = [result.output, *(str(w.message) for w in caught)]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        texts.append(str(result.exception))
    return [t for t in texts if t]


@pytest.mark.parametrize("case", list(INVOCATIONS))
def test_refusals_name_options_of_their_command(case: str, spellings: Spellings, files: dict[str, str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(Path(files["tmp"]) / "cache"))
    monkeypatch.delenv("DFKD_BENCH_DATA", raising=False)
    args = [a.format(**files) for a in INVOCATIONS[case]]
    command = _command_path(args, set(spellings.current))
    texts = invocation_messages(args)
    assert texts, case  # it said something
    bad = [p for t in texts for p in spellings.problems(t, {command} | spellings.quoted_commands(t))]
    assert not bad, "\n".join(bad)
