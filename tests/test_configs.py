"""The paper grids shipped in the package (dfkd_bench/configs/) load, name only registered datasets, methods
and models, and resolve every method's hyper-parameters (preset by dataset, per-teacher settings) without
any data; `sweep NAME` finds them from any folder and `sweeps` lists them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torchvision

from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.models import MODELS, model_info
from dfkd_bench.plugins import METHODS
from cli_helpers import ok, one_line_error
from dfkd_bench.sweep import load_sweep, shipped_grids

CONFIGS = sorted(shipped_grids().values())


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_paper_grid_loads_and_resolves(path: Path) -> None:
    configs = load_sweep(path)
    assert configs
    for config in configs:
        spec = get_dataset(config.dataset)
        cls = METHODS.get(config.method)
        teacher = config.teacher or spec.default_teacher
        for arch in (teacher, config.student or spec.default_student):
            MODELS.get(arch)
        hp = resolve_hparams(cls.Hparams, spec.preset_names, config.overrides, cls.name, teacher=teacher)
        if spec.name != "digits":
            assert any(name in cls.Hparams.PRESETS for name in spec.preset_names), (cls.name, spec.name)
        assert hp.synth_batch > 0
        if config.teacher_weights:
            weights = torchvision.models.get_model_weights(model_info(teacher).torchvision_name)
            assert config.teacher_weights in weights.__members__


def test_presets_follow_the_dataset_and_the_teacher() -> None:
    fast = METHODS.get("fast").Hparams
    imagenette = get_dataset("imagenette")
    assert resolve_hparams(fast, imagenette.preset_names).meta == "reptile"  # ImageNet's preset for a subset
    assert resolve_hparams(fast, ("cifar100",)).g_steps == 10  # Fast-10
    assert resolve_hparams(fast, ("cifar10",), teacher="vgg11").adv == 1.0
    wrn = resolve_hparams(fast, ("cifar10",), teacher="wrn40_2")
    assert (wrn.adv, wrn.oh) == (1.1, 0.4)
    assert resolve_hparams(fast, ("cifar10",), {"adv": "2.0"}, teacher="vgg11").adv == 2.0  # --set wins
    nayer = METHODS.get("nayer").Hparams
    assert resolve_hparams(nayer, get_dataset("tiny-imagenet").preset_names).g_steps == 60


def test_smoke_shrinks_every_preset() -> None:
    for name in ("deepinversion", "fast", "nayer", "muse"):
        cls = METHODS.get(name).Hparams
        full = resolve_hparams(cls, get_dataset("imagenet").preset_names)
        smoke = resolve_hparams(cls, get_dataset("imagenet").preset_names, smoke=True)
        assert smoke.synth_batch < full.synth_batch and smoke.kd_steps < full.kd_steps
        loop = "iterations" if name == "deepinversion" else "g_steps"
        assert getattr(smoke, loop) < getattr(full, loop)
        assert resolve_hparams(cls, ("cifar10",), {"synth_batch": "12"}, smoke=True).synth_batch == 12


def test_shipped_grids_are_found_by_name_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ folder here: the grids come from the installed package
    assert {"digits", "digits_equal_time", "cifar10_paper"} <= set(shipped_grids())
    out = ok(["sweep", "digits_equal_time", "--dry-run", "--out", str(tmp_path / "results")])
    assert out.count("-digits-r1-") == len(load_sweep(shipped_grids()["digits_equal_time"]))
    assert ok(["sweep", "configs/digits.toml", "--dry-run", "--out", str(tmp_path / "results")]).count("-digits-")
    listing = ok(["sweeps"])
    assert any(line.split()[:3] == ["digits", str(len(load_sweep(shipped_grids()["digits"]))), "runs"]
               for line in listing.splitlines())
    one_line_error(["sweep", "no_such_grid", "--dry-run"], "no_such_grid", "digits_equal_time")
