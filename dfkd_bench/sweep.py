"""Sweep files (TOML): the grid of a comparison, and `--shard i/n` to split it across jobs. The paper
grids ship inside the package (`dfkd_bench/configs/`), so `dfkd-bench sweep digits` works after a plain
`pip install`; a path works as well."""

from __future__ import annotations

import sys
from importlib import resources
from pathlib import Path
from typing import Any

from .config import parse_set_options
from .options import RunConfig, from_file
from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

def shipped_grids() -> dict[str, Path]:
    """The sweep files shipped with the package, by name (the file name without .toml)."""
    folder = resources.files("dfkd_bench") / "configs"
    return {entry.name[:-len(".toml")]: Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".toml")}


def sweep_path(name_or_path: str | Path) -> Path:
    """A sweep file given as a path, or a shipped grid given by name (`digits`; `configs/digits.toml`, the
    old in-repository path, is read as that name too)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    grids = shipped_grids()
    name = path.stem if path.suffix == ".toml" and path.parent.name in ("", "configs") else str(name_or_path)
    if name in grids:
        return grids[name]
    raise UserError(f"sweep file {name_or_path} does not exist; give a path or a shipped grid: {', '.join(sorted(grids))}")


def describe_grid(path: Path) -> str:
    """A shipped grid's first comment line (what it is), without the leading '#'."""
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
    return ""


def read_spec(path: str | Path) -> dict[str, Any]:
    """A sweep file's TOML tables, not yet checked: shared by the grid and the [launcher] reader."""
    path = sweep_path(path)
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"sweep file {path} is not valid TOML: {exc}") from exc


def load_sweep(path: str | Path, machine: dict[str, Any] | None = None) -> list[RunConfig]:
    """Read a sweep file into run configurations (methods x pairs x each option's list of values); its keys
    are the run options' (`options.file_keys`). `machine`: the `sweep` command's overrides of where it runs."""
    from .grid import expand

    spec = read_spec(path)
    where = f"sweep file {sweep_path(path)}"
    chosen = from_file(spec, where, machine)
    methods = [m.lower() for m in spec.get("methods", [])]
    if not methods:
        raise UserError(f"{where} lists no methods")
    overrides = parse_set_options([f"{k}={v}" for k, v in spec.get("set", {}).items()], methods)
    pairs = [tuple(p) for p in spec.get("pairs", [])] or [(None, None)]
    return expand(methods, chosen.base(methods[0]), chosen.axes, pairs=pairs, overrides=overrides)


def parse_shard(value: str | None) -> tuple[int, int]:
    """'i/n' (1-based) to (i, n); None is the whole sweep."""
    if not value:
        return 1, 1
    i, sep, n = value.partition("/")
    try:
        index, count = int(i), int(n)
    except ValueError:
        index, count = 0, 0
    if not sep or count < 1 or not 1 <= index <= count:
        raise UserError(f"--shard {value!r}: expected i/n with 1 <= i <= n, e.g. 2/8")
    return index, count


def shard(configs: list[RunConfig], index: int, count: int) -> list[RunConfig]:
    """Every count-th configuration starting at index (1-based): disjoint parts that merge by run_id."""
    return configs[index - 1::count]
