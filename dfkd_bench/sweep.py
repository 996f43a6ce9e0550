"""Sweep files (TOML): the grid of a comparison, and `--shard i/n` to split it across jobs. The paper
grids ship inside the package (`dfkd_bench/configs/`), so `dfkd-bench sweep digits` works after a plain
`pip install`; a path works as well."""

from __future__ import annotations

import sys
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

from .config import parse_set_options
from .options import RunConfig
from .errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KEYS = {"dataset", "methods", "ratios", "resolutions", "multi_resolutions", "seeds", "pairs", "set", "device",
        "data_root", "label_embeddings", "classes", "teacher_weights", "smoke", "protocol", "amp", "bank_gpu_gb", "compile", "auto_batch",
        "time_budgets", "launcher"}


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
    """A sweep file's TOML tables, top-level keys checked: shared by the grid and the [launcher] reader."""
    path = sweep_path(path)
    try:
        spec: dict[str, Any] = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"sweep file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(spec) - KEYS)
    if unknown:
        raise UserError(f"sweep file {path}: unknown keys {', '.join(unknown)}; choose from: {', '.join(sorted(KEYS))}")
    return spec


def load_sweep(path: str | Path) -> list[RunConfig]:
    """Read a sweep file into run configurations (methods x pairs x ratios x resolutions x seeds)."""
    from .grid import expand

    path = Path(path)
    spec = read_spec(path)
    methods = [m.lower() for m in spec.get("methods", [])]
    if not methods:
        raise UserError(f"sweep file {path} lists no methods")
    sets = [f"{k}={v}" for k, v in spec.get("set", {}).items()]
    overrides = parse_set_options(sets, methods)
    base = RunConfig(method=methods[0], dataset=spec.get("dataset", "digits"), device=spec.get("device", "auto"),
                     data_root=spec.get("data_root"), label_embeddings=spec.get("label_embeddings"),
                     classes=spec.get("classes"), teacher_weights=spec.get("teacher_weights"),
                     smoke=bool(spec.get("smoke", False)), protocol=spec.get("protocol", "equal"),
                     amp=spec.get("amp", "auto"), bank_gpu_gb=spec.get("bank_gpu_gb"),
                     compile=bool(spec.get("compile", False)), auto_batch=bool(spec.get("auto_batch", False)))
    pairs = [tuple(p) for p in spec.get("pairs", [])] or [(None, None)]
    grid = dict(ratios=spec.get("ratios", [0.1]), seeds=spec.get("seeds", [0]), pairs=pairs, overrides=overrides,
                time_budgets=_time_budgets(path, spec.get("time_budgets", [])))
    configs = expand(methods, base, resolutions=spec.get("resolutions", [None]), **grid)
    for multi in spec.get("multi_resolutions", []):
        configs += expand([m for m in methods if _is_multi(m)], replace(base, resolutions=tuple(int(r) for r in multi)), **grid)
    return configs


def _time_budgets(path: Path, values: Any) -> list[float]:
    """The spec's `time_budgets` (seconds, a list): each a positive number, else a one-line error."""
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
                                               for v in values):
        raise UserError(f"sweep file {path}: time_budgets must be a list of positive seconds, e.g. [30, 60], "
                        f"got {values!r}")
    return [float(v) for v in values]


def _is_multi(method: str) -> bool:
    from .plugins import METHODS

    return METHODS.get(method).multi_resolution


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
