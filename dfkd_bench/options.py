"""The run options, declared once. Each `RunConfig` field carries an `Option`; from it come the `run`
flags (and `sweep`'s machine overrides), the sweep files' keys, the keywords of the Python `run()`, the
run id and the dry-run plan's header. Adding an option is adding a field here."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Option:
    """How one run option appears in every layer."""

    help: str
    kind: type = str        # one value's type: str, int, float, bool, or tuple (a set of ints)
    sweeps: bool = False    # a list makes one run per value: a comma-separated flag, a plural file key
    identity: str = "no"    # enters the run id: "always", "unless_default" (left out at its default), "no"
    id_key: str = ""        # its key in the run id when not the field's name
    choices: tuple[str, ...] = ()
    machine: bool = False   # says where a grid runs, not what it compares: `sweep` may override the file
    hparam: str = ""        # sets this hyper-parameter of every method of the run (`--set` wins)
    positive: bool = False  # a number that must be > 0


def option(default: Any, help: str, **how: Any) -> Any:
    """A `RunConfig` field with its `Option`."""
    return field(default=default, metadata={"option": Option(help, **how)})


@dataclass
class RunConfig:
    """Everything that defines one run; `run_id` hashes its resolved form. A field without an `Option`
    (the method, the `--set` overrides) is given by the grid, not as an option."""

    method: str
    dataset: str = option("digits", "Dataset name (`dfkd-bench datasets`).", identity="always")
    ratio: float = option(0.1, "Synthetic images / real train size.", kind=float, sweeps=True, identity="always")
    teacher: str | None = option(None, "Teacher architecture (default: the dataset's).", identity="always")
    student: str | None = option(None, "Student architecture (default: the dataset's).", identity="always")
    teacher_checkpoint: str | None = option(None, "Teacher weights to use instead of the cache.", identity="always")
    resolution: int | None = option(None, "Generation resolution N (default: the method's for the dataset).",
                                    kind=int, sweeps=True, identity="always", id_key="resolutions")
    multi_resolution: tuple[int, ...] | None = option(
        None, "ONE run generating at several resolutions, e.g. 16,32 (MUSE); several sets, e.g. '16,32;8,16,32', "
        "sweep. Only methods that generate at several resolutions take it.", kind=tuple, sweeps=True)
    time_budget: float | None = option(None, "Seconds of synthesis + KD per run; the ratio then caps the images.",
                                       kind=float, sweeps=True, identity="unless_default", positive=True)
    seed: int = option(0, "Seed.", kind=int, sweeps=True, identity="always")
    device: str = option("auto", "auto, cpu or cuda.", identity="always", machine=True)
    data_root: str | None = option(None, "Folder with the dataset's files (default $DFKD_BENCH_DATA; digits needs "
                                         "none).", machine=True)
    classes: str | None = option(None, "File of ImageNet wnids (one a line): use that class subset.")
    teacher_weights: str | None = option(None, "torchvision weight set for a tv_* teacher, e.g. IMAGENET1K_V1.",
                                         identity="unless_default")
    label_embeddings: str | None = option(None, "Label-embedding file (.npz) instead of the shipped one.",
                                          identity="always")
    smoke: bool = option(False, "A handful of steps per phase on a tiny budget: check a setup end to end.",
                         kind=bool, identity="unless_default")
    protocol: str = option("equal", "equal: same student steps per image for every method; paper: each "
                                    "reference's own schedule.", choices=("equal", "paper"), identity="unless_default")
    amp: str = option("auto", "bf16 autocast of the forwards: auto (where the hardware has bf16), bf16, off (fp32, "
                              "as the reference code runs).", identity="unless_default", machine=True)
    compile: bool = option(False, "torch.compile teacher, student and generator (eager, with a one-line note, where "
                                  "it fails).", kind=bool, machine=True)
    bank_gpu_gb: float | None = option(None, "GiB the uint8 bank may take on the GPU; past it the bank moves to host "
                                             "memory (default: half the GPU).", kind=float, machine=True)
    auto_batch: bool = option(False, "After running out of memory, retry at half the batch sizes (same images "
                                     "seen), down to a floor.", kind=bool, machine=True)
    eval_every: int | None = option(None, "Rounds between test-set evaluations of the curve (default: the "
                                          "method's).", kind=int, hparam="eval_every", positive=True)
    overrides: dict[str, str] = field(default_factory=dict)


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(RunConfig) if "option" in f.metadata}
DEFAULTS: dict[str, Any] = {f.name: f.default for f in fields(RunConfig) if f.default is not MISSING}

# Old spellings that still work, with a warning, per layer: (layer, old spelling) -> the option's name.
DEPRECATED: dict[tuple[str, str], str] = {
    ("flag", "--sweep-resolutions"): "resolution",
    ("flag", "--resolutions"): "multi_resolution",
    ("keyword", "resolutions"): "multi_resolution",
}


def flag_name(name: str) -> str:
    """The `run` flag of an option: `--time-budget` for `time_budget`."""
    return "--" + name.replace("_", "-")


def file_key(name: str) -> str:
    """The sweep-file key of an option: plural for an option whose list sweeps (`seeds`), else its name."""
    return name + "s" if OPTIONS[name].sweeps else name


def deprecated_names(layer: str) -> dict[str, str]:
    """The old spellings of a layer ("flag", "keyword") with the option each stands for."""
    return {old: name for (kind, old), name in DEPRECATED.items() if kind == layer}


def label(name: str, where: str) -> str:
    """An option as a message names it: `--ratio` on the command line (`where` empty), `ratios` in a
    sweep file, `ratio` in `run()`."""
    if not where:
        return flag_name(name)
    return f"{where}: {file_key(name)}" if where.startswith("sweep file") else f"{where} {name}"


def cast_value(name: str, value: Any, where: str) -> Any:
    """One value of an option checked and converted to its kind; a one-line error names the option."""
    opt = OPTIONS[name]
    try:
        if opt.kind is tuple:
            items = value.split(",") if isinstance(value, str) else list(value)
            converted: Any = tuple(_strict(int, v) for v in items if str(v).strip())
        elif opt.kind is bool:
            converted = _boolean(value)
        else:
            converted = _strict(opt.kind, value)
    except (TypeError, ValueError):
        what = {tuple: "a set of integers, e.g. 16,32", bool: "true or false", int: "an integer", float: "a number"}
        raise UserError(f"{label(name, where)}: expected {what.get(opt.kind, 'text')}, got {value!r}") from None
    if opt.kind is float and not math.isfinite(converted):
        raise UserError(f"{label(name, where)}: expected a finite number, got {value!r}")
    if opt.positive and not converted > 0:
        raise UserError(f"{label(name, where)}: must be a positive number, got {value!r}")
    if opt.choices and converted not in opt.choices:
        raise UserError(f"{label(name, where)} {converted!r}; choose from: {', '.join(opt.choices)}")
    return converted


def _strict(kind: type, value: Any) -> Any:
    """`kind(value)` for a string or a value of that kind (an int for a float); a bool, or a float for
    an int, is refused rather than silently converted."""
    if isinstance(value, str):
        return kind(value.strip())
    if isinstance(value, bool) or not isinstance(value, (kind, int) if kind is float else kind):
        raise ValueError(value)
    return kind(value)


def _boolean(value: Any) -> bool:
    """A bool, or its usual spellings as text."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError(value)
    return text in ("1", "true", "yes", "on")


def values_of(name: str, value: Any, where: str) -> list[Any]:
    """An option's values as a list. For an option that sweeps, a list, a comma-separated string (sets
    of integers separated by ';') or a tuple of single values gives several; anything else is one."""
    opt = OPTIONS[name]
    several = isinstance(value, list) or (isinstance(value, tuple) and opt.kind is not tuple)
    if opt.sweeps and isinstance(value, str):
        parts = value.split(";") if opt.kind is tuple else value.split(",")
        return [cast_value(name, p, where) for p in parts if p.strip()]
    if several and not opt.sweeps:
        raise UserError(f"{label(name, where)}: takes one value, got {value!r}")
    return [cast_value(name, v, where) for v in value] if several else [cast_value(name, value, where)]


@dataclass
class GridOptions:
    """What a command line, a sweep file or a `run()` call sets: one value per option, and the list of
    values of each option that sweeps (`axes`)."""

    values: dict[str, Any] = field(default_factory=dict)
    axes: dict[str, list[Any]] = field(default_factory=dict)

    def add(self, name: str, value: Any, where: str) -> None:
        """Set an option from a raw value (None leaves it unset)."""
        if value is None:
            return
        given = values_of(name, value, where)
        if OPTIONS[name].sweeps:
            self.axes[name] = given
        else:
            self.values[name] = given[0]

    def base(self, method: str) -> RunConfig:
        """The run configuration every run of the grid starts from."""
        return RunConfig(method=method, **self.values)


def from_keywords(keywords: dict[str, Any]) -> GridOptions:
    """The Python `run()`'s option keywords; an unknown one is refused, an old spelling warned about."""
    chosen = GridOptions()
    old = deprecated_names("keyword")
    for key, value in keywords.items():
        name = old.get(key, key)
        if name not in OPTIONS:
            raise UserError(f"run(): unknown option {key!r}; choose from: {', '.join(OPTIONS)}")
        if key in old:
            warnings.warn(f"run({key}=...) is deprecated; use run({name}=...)", DeprecationWarning, stacklevel=3)
        chosen.add(name, value, "run()")
    return chosen


def keyword_help() -> str:
    """The run options as `run()`'s docstring lists them."""
    return "\n".join(f"    {name}: {opt.help}{' A list sweeps.' if opt.sweeps else ''}" for name, opt in OPTIONS.items())


FILE_KEYS_OF_GRID = ("methods", "pairs", "set", "launcher")  # sweep-file keys that are not run options


def file_keys() -> list[str]:
    """Every key a sweep file accepts."""
    return [*FILE_KEYS_OF_GRID, *(file_key(name) for name in OPTIONS)]


def from_file(spec: dict[str, Any], where: str, machine: dict[str, Any] | None = None) -> GridOptions:
    """A sweep file's option keys (unknown keys are refused), then `machine` (the `sweep` command's
    overrides of where the grid runs) on top."""
    unknown = sorted(set(spec) - set(file_keys()))
    if unknown:
        raise UserError(f"{where}: unknown keys {', '.join(unknown)}; choose from: {', '.join(sorted(file_keys()))}")
    chosen = GridOptions()
    for name, opt in OPTIONS.items():
        value = spec.get(file_key(name))
        if opt.sweeps and value is not None and not isinstance(value, list):
            raise UserError(f"{label(name, where)} must be a list, e.g. {file_key(name)} = [...], got {value!r}")
        chosen.add(name, value, where)
    for name, value in (machine or {}).items():
        chosen.add(name, value, "")
    return chosen


def hparam_overrides(config: RunConfig) -> dict[str, Any]:
    """The hyper-parameters a run's options set for every method (`--eval-every`), under its `--set` ones."""
    return {**{opt.hparam: getattr(config, name) for name, opt in OPTIONS.items()
               if opt.hparam and getattr(config, name) is not None}, **config.overrides}


def run_identity(resolved: dict[str, Any]) -> dict[str, Any]:
    """The options that name a run, from their resolved values (teacher, device, resolutions, ... as the
    run uses them): "always" ones, and "unless_default" ones that differ from their default."""
    identity = {}
    for name, opt in OPTIONS.items():
        if opt.identity == "always" or (opt.identity == "unless_default"
                                        and resolved[name] not in (None, False, DEFAULTS[name])):
            identity[opt.id_key or name] = resolved[name]
    return identity


def stable_hash(payload: dict[str, Any], length: int = 10) -> str:
    """Short sha256 of a JSON-serialisable mapping with sorted keys."""
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
