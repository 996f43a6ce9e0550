"""One schema for the run options: `RunConfig`'s fields generate the `run` flags, `sweep`'s machine flags,
the sweep files' keys, `run()`'s keywords, the run id and the dry-run header; old spellings warn."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from click.testing import CliRunner

from dfkd_bench.cli import cli
from dfkd_bench.errors import UserError
from dfkd_bench.options import OPTIONS, file_key, file_keys, flag_name, from_file, from_keywords
from dfkd_bench.runner import run
from dfkd_bench.sweep import load_sweep


def command_flags(name: str) -> set[str]:
    return {o for p in cli.commands[name].params for o in p.opts if not getattr(p, "hidden", False)}


def test_every_option_is_a_run_flag_a_file_key_and_a_keyword() -> None:
    flags = command_flags("run")
    assert {flag_name(n) for n in OPTIONS} <= flags
    assert {file_key(n) for n in OPTIONS} <= set(file_keys())
    assert all(f"    {n}: " in run.__doc__ for n in OPTIONS)
    machine = {flag_name(n) for n, o in OPTIONS.items() if o.machine}
    assert machine <= command_flags("sweep") and "--ratio" not in command_flags("sweep")


def test_resolution_is_spelled_alike_in_every_layer(tmp_path: Path) -> None:
    """`resolution` sweeps single resolutions and `multi_resolution` makes one run per set, whether given
    as flags, `run()` keywords or (plural) sweep-file keys."""
    from_flags = CliRunner().invoke(cli, ["run", "--methods", "muse,fast", "--resolution", "16,32",
                                          "--multi-resolution", "16,32", "--dry-run", "--format", "json"])
    assert from_flags.exit_code == 0, from_flags.output
    by_flags = sorted(p["run_id"] for p in json.loads(from_flags.output))
    by_keywords = sorted(r.run_id for r in run("muse,fast", resolution=[16, 32], multi_resolution=(16, 32),
                                               dry_run=True))
    spec = tmp_path / "grid.toml"
    spec.write_text('methods = ["muse", "fast"]\nresolutions = [16, 32]\nmulti_resolutions = [[16, 32]]\n')
    from dfkd_bench.resolve import resolve_all
    by_file = sorted(r.run_id for r in resolve_all(load_sweep(spec), need_data=False))
    assert by_flags == by_keywords == by_file and len(by_flags) == 5  # muse 16, 32, 16+32; fast 16, 32


def test_old_spellings_warn_and_mean_the_same(tmp_path: Path) -> None:
    old = CliRunner().invoke(cli, ["run", "--methods", "muse", "--resolutions", "16,32", "--dry-run"])
    new = CliRunner().invoke(cli, ["run", "--methods", "muse", "--multi-resolution", "16,32", "--dry-run"])
    assert old.exit_code == new.exit_code == 0
    assert "note: `--resolutions` is deprecated" in old.stderr and "--multi-resolution" in old.stderr
    assert old.stdout == new.stdout
    both = CliRunner().invoke(cli, ["run", "--methods", "fast", "--sweep-resolutions", "16", "--resolution", "32",
                                    "--dry-run"])
    assert isinstance(both.exception, UserError) and "give only --resolution" in str(both.exception)
    with pytest.warns(DeprecationWarning, match="multi_resolution"):
        by_old = run("muse", resolutions=(16, 32), dry_run=True)
    assert [r.run_id for r in by_old] == [r.run_id for r in run("muse", multi_resolution=(16, 32), dry_run=True)]


def test_unknown_or_malformed_options_are_refused_in_every_layer() -> None:
    with pytest.raises(UserError, match="unknown option 'ratios'; choose from: dataset, ratio"):
        from_keywords({"ratios": [0.1]})
    with pytest.raises(UserError, match=r"sweep file x: ratios must be a list"):
        from_file({"ratios": 0.1}, "sweep file x")
    with pytest.raises(UserError, match=r"sweep file x: seeds: expected an integer, got 0.5"):
        from_file({"seeds": [0.5]}, "sweep file x")
    with pytest.raises(UserError, match=r"sweep file x: unknown keys seed; choose from: .*seeds"):
        from_file({"seed": 1}, "sweep file x")
    with pytest.raises(UserError, match=r"run\(\) protocol 'papers'; choose from: equal, paper"):
        from_keywords({"protocol": "papers"})
    with pytest.raises(UserError, match=r"run\(\) dataset: takes one value"):
        from_keywords({"dataset": ["digits", "cifar10"]})


def test_eval_every_sets_every_methods_hyper_parameter_as_set_does() -> None:
    """An option declared with `hparam=` reaches each method's hyper-parameters; `--set` wins over it."""
    [flag] = run("nayer", eval_every=3, dry_run=True)
    [by_set] = run("nayer", sets=["nayer.eval_every=3"], dry_run=True)
    [both] = run("nayer", eval_every=3, sets=["nayer.eval_every=2"], dry_run=True)
    assert flag.hparams.eval_every == 3 and flag.run_id == by_set.run_id
    assert both.hparams.eval_every == 2
    result = CliRunner().invoke(cli, ["run", "--methods", "nayer", "--eval-every", "3", "--dry-run", "--format", "json"])
    assert json.loads(result.output)[0]["hparams"]["eval_every"] == 3


def test_the_dry_run_header_carries_every_option() -> None:
    result = CliRunner().invoke(cli, ["run", "--methods", "fast", "--time-budget", "5", "--dry-run", "--format", "json"])
    [plan] = json.loads(result.output)
    keys = {OPTIONS[n].id_key or n for n in OPTIONS}
    assert keys <= set(plan) and plan["time_budget"] == 5.0 and plan["resolutions"] == [32]
    assert plan["teacher"] == "digits_resnet8" and plan["precision"] in ("fp32", "bf16")


def test_sweep_machine_flags_override_the_file(tmp_path: Path) -> None:
    spec = tmp_path / "grid.toml"
    spec.write_text('methods = ["fast"]\ndevice = "cuda"\nseeds = [0, 1]\n')
    with warnings.catch_warnings():
        configs = load_sweep(spec, {"device": "cpu", "amp": "off"})
    assert [(c.device, c.amp, c.seed) for c in configs] == [("cpu", "off", 0), ("cpu", "off", 1)]
