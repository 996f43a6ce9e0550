"""The method registry and discovery, and the built-in methods called directly through a
MethodContext (no runner, no trained teacher): shapes, ranges, labels, falling losses, state."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import dfkd_bench.plugins as plugins
from dfkd_bench.schedule import RoundInfo
from dfkd_bench import Method, MethodContext, SyntheticBatch, UserError, register_method
from dfkd_bench.config import MethodHparams, resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import GeneratorMethod, Normalize, StudentStep, kd_loss
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS, load_plugin
from dfkd_bench.registry import Registry

# --------------------------------------------------------------------------- registry


def test_registry_lookup_error_names_the_choices() -> None:
    reg: Registry[int] = Registry("widget")
    reg.add("beta", 2)
    reg.add("Alpha", 1)
    assert reg.names() == ["alpha", "beta"]
    assert reg.get("ALPHA") == 1 and reg.get(" beta ") == 2 and "alpha" in reg
    with pytest.raises(UserError) as exc:
        reg.get("gamma")
    msg = str(exc.value)
    assert msg == "unknown widget 'gamma'; choose from: alpha, beta"


def test_registry_refuses_a_second_object_under_a_taken_name() -> None:
    reg: Registry[type] = Registry("widget")

    class One:
        """First line of the docstring.

        More text."""

    class Two:
        pass

    reg.register("one")(One)
    reg.add("one", One)  # the same object again (a re-imported plugin) is fine
    with pytest.raises(ValueError, match="already registered"):
        reg.add("one", Two)
    assert reg.entries()[0].description == "First line of the docstring."


def test_registry_loader_runs_once_on_first_lookup() -> None:
    calls = []
    reg: Registry[int] = Registry("widget", loader=lambda: (calls.append(1), reg.add("x", 1)))
    assert calls == []
    assert reg.names() == ["x"] and reg.get("x") == 1 and "x" in reg
    assert calls == [1]


def test_builtin_methods_are_discovered() -> None:
    names = METHODS.names()
    assert {"deepinversion", "fast"} <= set(names)
    for name in ("deepinversion", "fast"):
        cls = METHODS.get(name)
        assert issubclass(cls, Method) and cls.name == name and issubclass(cls.Hparams, MethodHparams)
    with pytest.raises(UserError, match="unknown method 'nope'; choose from: .*deepinversion.*fast"):
        METHODS.get("nope")


@pytest.mark.usefixtures("clean_methods")
def test_entry_point_group_is_consulted(monkeypatch: pytest.MonkeyPatch) -> None:
    groups = []

    class FakeEntryPoint:
        name = "ep_method"

        def load(self) -> type:
            @register_method("ep_method", "registered by an installed package")
            class EpMethod(Method):
                def synthesize(self, n: int, round: RoundInfo | None = None) -> SyntheticBatch:
                    raise NotImplementedError

            return EpMethod

    def fake_entry_points(group: str) -> list[FakeEntryPoint]:
        groups.append(group)
        return [FakeEntryPoint()]

    monkeypatch.setattr(plugins, "entry_points", fake_entry_points)
    METHODS.rediscover()  # discovery runs again on the next lookup
    assert "ep_method" in METHODS.names()
    assert groups == ["dfkd_bench.methods"]
    assert {"deepinversion", "fast"} <= set(METHODS.names())


@pytest.mark.usefixtures("clean_methods")
def test_load_plugin_registers_and_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "my_noise.py"
    good.write_text(
        "import torch\n"
        "from dfkd_bench import Method, SyntheticBatch, register_method\n"
        "@register_method('my_noise')\n"
        "class MyNoise(Method):\n"
        "    '''Uniform noise images.'''\n"
        "    def synthesize(self, n, round=None):\n"
        "        c = self.ctx\n"
        "        x = torch.rand(n, 3, c.resolution, c.resolution, generator=c.generator)\n"
        "        return SyntheticBatch(x, torch.zeros(n, dtype=torch.long))\n")
    load_plugin(good)
    assert METHODS.get("my_noise").name == "my_noise"
    load_plugin(good)  # loading the same file twice is harmless
    with pytest.raises(UserError, match="no such file"):
        load_plugin(tmp_path / "missing.py")
    broken = tmp_path / "broken.py"
    broken.write_text("import this_module_does_not_exist_anywhere\n")
    with pytest.raises(UserError, match="failed to import: ModuleNotFoundError") as exc:
        load_plugin(broken)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- methods through a context

SPEC = get_dataset("digits")


@pytest.fixture(scope="module")
def tiny_teacher() -> nn.Module:
    """An untrained digits_resnet8_slim whose BatchNorm running statistics were measured on 512 real
    digits (no weight is trained): the BN-statistics loss is then attainable, as for a real teacher."""
    torch.manual_seed(0)
    teacher = create_model("digits_resnet8_slim", SPEC.num_classes)
    for m in teacher.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batch
    teacher.train()
    norm = Normalize(SPEC.mean, SPEC.std)
    with torch.no_grad():
        teacher(norm(SPEC.open().in_memory_train()[0][:512]))
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def make_ctx(teacher: nn.Module, resolution: int = 32, seed: int = 0) -> MethodContext:
    """What execute.execute builds, on the CPU, with a fresh untrained student."""
    torch.manual_seed(seed)
    student = create_model("digits_resnet8_slim", SPEC.num_classes)
    return MethodContext.create(teacher, student, SPEC, seed, resolutions=(resolution,))


def make_method(name: str, ctx: MethodContext, **overrides: object) -> Method:
    cls = METHODS.get(name)
    return cls(ctx, resolve_hparams(cls.Hparams, "digits", overrides, name))


QUICK = {"deepinversion": dict(iterations=1, synth_batch=16), "fast": dict(g_steps=1, synth_batch=16)}


@pytest.mark.parametrize("resolution", [32, 16])
@pytest.mark.parametrize("name", ["deepinversion", "fast"])
def test_synthesize_shapes_range_and_labels(tiny_teacher: nn.Module, name: str, resolution: int) -> None:
    method = make_method(name, make_ctx(tiny_teacher, resolution), **QUICK[name])
    for index, n in enumerate((10, 3)):
        round_info = RoundInfo.standalone(index=index, images=n)
        batch = method.synthesize(n, round_info)
        assert isinstance(batch, SyntheticBatch)
        assert batch.images.shape == (n, 3, resolution, resolution)
        assert batch.images.dtype == torch.float32 and not batch.images.requires_grad
        assert batch.images.min() >= 0 and batch.images.max() <= 1
        assert batch.labels.shape == (n,) and batch.labels.dtype == torch.long
        assert batch.labels.min() >= 0 and batch.labels.max() < SPEC.num_classes
        assert batch.loss is not None and torch.isfinite(torch.tensor(batch.loss))
        if isinstance(method, GeneratorMethod):  # the engine owns the round count; the method keeps the round
            assert method.round is round_info
    assert isinstance(method, GeneratorMethod) == (name == "fast")


def test_synthesis_is_reproducible_from_the_context_generator(tiny_teacher: nn.Module) -> None:
    a = make_method("fast", make_ctx(tiny_teacher, seed=3), **QUICK["fast"]).synthesize(8)
    b = make_method("fast", make_ctx(tiny_teacher, seed=3), **QUICK["fast"]).synthesize(8)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)


def test_deepinversion_loss_falls_over_iterations(tiny_teacher: nn.Module) -> None:
    def loss_after(iterations: int) -> float:
        # keep_best=False: the reported loss is the last iterate's, not the best one's
        method = make_method("deepinversion", make_ctx(tiny_teacher, seed=1), iterations=iterations,
                             keep_best=False, synth_batch=16)
        return method.synthesize(16).loss

    first, later = loss_after(1), loss_after(20)
    assert later < 0.6 * first, (first, later)


def test_deepinversion_keep_best_reports_the_lowest_loss(tiny_teacher: nn.Module) -> None:
    kw = dict(iterations=6, synth_batch=8)
    best = make_method("deepinversion", make_ctx(tiny_teacher, seed=2), keep_best=True, **kw).synthesize(8)
    last = make_method("deepinversion", make_ctx(tiny_teacher, seed=2), keep_best=False, **kw).synthesize(8)
    assert best.loss <= last.loss


def test_deepinversion_adi_and_lowres_branches_run(tiny_teacher: nn.Module) -> None:
    method = make_method("deepinversion", make_ctx(tiny_teacher), iterations=3, lowres_iterations=2, adi=1.0,
                         synth_batch=8)
    batch = method.synthesize(8, RoundInfo.standalone(index=1))  # the ADI (student) term from the second round on
    assert batch.images.shape == (8, 3, 32, 32) and torch.isfinite(batch.images).all()
    assert "synth/adi" in method.loss_terms


@pytest.mark.parametrize("meta", ["maml", "reptile"])
def test_fast_generator_loss_falls_over_rounds(tiny_teacher: nn.Module, meta: str) -> None:
    method = make_method("fast", make_ctx(tiny_teacher), g_steps=3, synth_batch=16, warmup_rounds=0, adv=0.0,
                         meta=meta)
    losses = []
    for r in range(8):
        losses.append(method.synthesize(16, RoundInfo.standalone(index=r)).loss)
    # Every round starts from a fresh latent: the loss only falls if the meta-generator learns.
    assert losses[-1] < 0.85 * losses[0], losses


def test_fast_meta_generator_moves_once_per_round_and_state_round_trips(tiny_teacher: nn.Module) -> None:
    method = make_method("fast", make_ctx(tiny_teacher), **QUICK["fast"])
    before = [p.detach().clone() for p in method.generator.parameters()]
    method.synthesize(8, RoundInfo.standalone(index=0))
    assert any(not torch.equal(a, b) for a, b in zip(before, method.generator.parameters()))
    assert method.bn_loss.ema_mean is not None  # the BN momentum buffer was filled

    other = make_method("fast", make_ctx(tiny_teacher, seed=7), **QUICK["fast"])
    other.load_state_dict(method.state_dict())
    # one round done: the meta-optimiser took exactly one step, and its state travelled
    steps = [float(s["step"]) for s in other.meta_optimizer.state_dict()["state"].values()]
    assert steps == [float(s["step"]) for s in method.meta_optimizer.state_dict()["state"].values()]
    assert steps and set(steps) == {1.0}
    for a, b in zip(method.generator.state_dict().values(), other.generator.state_dict().values()):
        assert torch.equal(a, b)
    assert all(torch.equal(a, b) for a, b in zip(method.bn_loss.ema_var, other.bn_loss.ema_var))
    # the same generator state and RNG state give the same next batch
    method.ctx.generator.manual_seed(11)
    other.ctx.generator.manual_seed(11)
    assert torch.equal(method.synthesize(4).images, other.synthesize(4).images)


def test_fast_rejects_an_unknown_meta_mode(tiny_teacher: nn.Module) -> None:
    with pytest.raises(UserError, match="choose from: maml, reptile"):
        make_method("fast", make_ctx(tiny_teacher), meta="adam")


def test_default_student_loss_is_kd_and_warmup_follows_the_round(tiny_teacher: nn.Module) -> None:
    @dataclass
    class Hp(MethodHparams):
        pass

    method = Method(make_ctx(tiny_teacher), Hp(temperature=3.0, warmup_rounds=2))
    s, t = torch.randn(4, 10), torch.randn(4, 10)
    terms = method.student_loss(StudentStep(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), s, t))
    assert list(terms) == ["kd"] and torch.equal(terms["kd"], kd_loss(s, t, 3.0))
    # warm-up is read from the round the engine passes, not counted by the method
    assert RoundInfo(index=0, epoch=0, images=4, warmup=True, kd_steps=0).in_warmup
    assert not RoundInfo(index=2, epoch=2, images=4, warmup=False, kd_steps=1).in_warmup
    assert not RoundInfo.standalone().in_warmup and not RoundInfo.standalone(index=1).in_warmup
    assert method.state_dict() == {}  # the base method keeps no round count
    # model_input resizes to the dataset's input size and normalises
    x = method.model_input(torch.full((2, 3, 16, 16), 0.305))
    assert x.shape == (2, 3, 32, 32) and x.abs().max() < 1e-5


def test_resolve_hparams_layers_defaults_preset_and_overrides() -> None:
    cls = METHODS.get("fast").Hparams
    hp = resolve_hparams(cls, "digits", {"g_steps": "3", "lr_g": "1e-3", "synth_augment": "false"}, "fast")
    assert hp.g_steps == 3 and hp.lr_g == 1e-3 and hp.synth_augment is False
    assert hp.ngf == cls.PRESETS["digits"]["ngf"]  # from the preset
    assert hp.oh == cls().oh  # a default
    di = resolve_hparams(METHODS.get("deepinversion").Hparams, "digits", {"betas": "0.4,0.8"}, "deepinversion")
    assert di.betas == (0.4, 0.8)
    with pytest.raises(UserError, match="fast has no parameter 'nope'; choose from: .*g_steps"):
        resolve_hparams(cls, "digits", {"nope": "1"}, "fast")
    with pytest.raises(UserError, match="expected integer"):
        resolve_hparams(cls, "digits", {"g_steps": "2.5"}, "fast")
    with pytest.raises(UserError, match="expected boolean"):
        resolve_hparams(cls, "digits", {"keep_best": "maybe"}, "fast")
