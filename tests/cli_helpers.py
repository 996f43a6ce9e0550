"""Helpers shared by the CLI-level tests: run `dfkd-bench` in-process, expect success or one error line,
and give a test module a teacher/split cache of its own."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Iterator

import pytest

from dfkd_bench.cli import main


def run_cli(args: list[str]) -> tuple[int, str, str]:
    """main(args) in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def ok(args: list[str]) -> str:
    """Run a command that must succeed; its stdout."""
    code, out, err = run_cli(args)
    assert code == 0, (out, err)
    return out


def one_line_error(args: list[str], *pieces: str) -> str:
    """Run a command that must fail with exit 2 and exactly one `error:` line holding every piece."""
    code, out, err = run_cli(args)
    lines = err.splitlines()
    assert code == 2, (out, err)
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for piece in pieces:
        assert piece in lines[0], (piece, lines[0])
    assert "Traceback" not in out + err
    return lines[0]


@contextlib.contextmanager
def own_cache(path: Path) -> Iterator[Path]:
    """$DFKD_BENCH_CACHE at `path` and no $DFKD_BENCH_DATA, for the duration."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFKD_BENCH_CACHE", str(path))
        mp.delenv("DFKD_BENCH_DATA", raising=False)
        yield path
