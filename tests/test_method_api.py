"""Method API v2: declared capabilities and their one-line errors, the online sample source on the
image budget (and the paper's steps), bit-identical resume for an online and a bank method, the engine's
explicit student features, the nine methods end to end, and new method files on public names only."""

from __future__ import annotations

import ast
import math
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch
from cli_helpers import ok, one_line_error

import dfkd_bench
import dfkd_bench.api as api
from dfkd_bench.config import resolve_hparams
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import (DistillationRun, GeneratorMethod, GeneratorStep, LatentGenerator, Method,
                               MethodContext, OnlineGeneratorMethod, OnlineHparams, RoundInfo, StudentStep)
from dfkd_bench.errors import UserError
from dfkd_bench.label_embeddings import load_label_embeddings
from dfkd_bench.models import create_model
from dfkd_bench.plugins import METHODS
from dfkd_bench.schedule import online_draws, plan_schedule

SPEC = get_dataset("digits")
METHOD_DIR = Path(dfkd_bench.__file__).resolve().parent.parent / "methods"
NEW_METHODS = ("dafl", "zskt", "dfad", "dfq", "cmi")
ALL_METHODS = ("deepinversion", "fast", "nayer", "muse", *NEW_METHODS)


def tiny_ctx(seed: int = 0, resolutions: tuple[int, ...] | None = None) -> MethodContext:
    """Untrained slim digits models (teacher frozen) in a CPU context from the one factory."""
    torch.manual_seed(seed)
    teacher = create_model("digits_resnet8_slim", SPEC.num_classes).eval().requires_grad_(False)
    return MethodContext.create(teacher, create_model("digits_resnet8_slim", SPEC.num_classes), SPEC, seed,
                                resolutions, label_embeddings_loader=lambda: load_label_embeddings("digits").vectors)


# A few optimisation steps on small batches, for whichever of these knobs a method has.
# DeepInversion's pixels start from noise far from the teacher's BN statistics: it gets more steps.
FEW_STEPS = {"synth_batch": "12", "kd_batch": "12", "g_steps": "8", "iterations": "24", "noise_dim": "32",
             "warmup_rounds": "0"}


@pytest.mark.parametrize("name", ALL_METHODS)
def test_every_method_synthesises_valid_batches_and_its_loss_falls(name: str) -> None:
    cls = METHODS.get(name)
    (resolution,) = cls.default_resolutions(SPEC)
    known = {f.name for f in fields(cls.Hparams)}
    online = cls.sample_source == "online"
    overrides = {k: v for k, v in FEW_STEPS.items() if k in known}
    if online:
        overrides["g_steps"] = "1"  # one generator step per call, called eight times below
    method = cls(tiny_ctx(resolutions=(resolution,)), resolve_hparams(cls.Hparams, "digits", overrides, name))
    losses: list[float] = []
    seam = "generator_loss" if isinstance(method, GeneratorMethod) else "step_loss"
    original = getattr(method, seam)

    def recorded(*args: Any) -> torch.Tensor:
        loss = original(*args)
        losses.append(float(loss.detach()))
        return loss

    setattr(method, seam, recorded)
    if online:
        for _ in range(8):
            method.train_generator(RoundInfo.standalone(index=1))
        batch = method.draw(12)
    else:
        batch = method.synthesize(12, RoundInfo.standalone(index=1))
    assert batch.images.shape == (12, 3, resolution, resolution) and not batch.images.requires_grad
    assert batch.images.min() >= 0 and batch.images.max() <= 1 and torch.isfinite(batch.images).all()
    assert batch.labels.shape == (12,) and batch.labels.dtype == torch.long
    assert 0 <= batch.labels.min() and batch.labels.max() < SPEC.num_classes
    assert len(losses) == (24 if name == "deepinversion" else 8) and all(map(math.isfinite, losses))
    assert min(losses[len(losses) // 2:]) < losses[0], losses  # the optimised loss falls within a few steps


@dataclass
class TinyOnlineHparams(OnlineHparams):
    """A one-layer-wide latent generator, tiny steps."""

    nz: int = 8
    ngf: int = 4
    kd_batch: int = 8
    round_steps: int = 3
    s_steps: int = 2
    adv: float = 1.0
    oh: float = 1.0


class TinyOnline(OnlineGeneratorMethod):
    """An online method on public hooks only: CE to random labels plus the boundary term."""

    Hparams: ClassVar[type] = TinyOnlineHparams
    name = "tiny_online"

    def build_generator(self) -> LatentGenerator:
        return LatentGenerator(self.hp.nz, self.hp.ngf, self.ctx.resolution, SPEC.in_chans)


def test_capabilities_are_declared_on_method_with_defaults() -> None:
    assert Method.multi_resolution is False and Method.sample_source == "bank"
    assert Method.default_resolutions(SPEC) == (SPEC.input_size,)
    Method.check_resolution(18)  # the base accepts any size
    assert METHODS.get("muse").multi_resolution and METHODS.get("muse").default_resolutions(SPEC) == (16,)
    for name in ALL_METHODS:
        cls = METHODS.get(name)
        assert cls.sample_source in ("bank", "online"), name
        with pytest.raises(UserError, match="one resolution") if not cls.multi_resolution else nullcontext():
            cls.check_resolutions((16, 32))


@pytest.mark.parametrize("args, pieces", [
    (["--methods", "fast", "--resolution", "18"], ["generation resolution 18", "fast", "multiples of 4"]),
    (["--methods", "nayer", "--resolution", "30"], ["generation resolution 30", "nayer"]),
    (["--methods", "dfad", "--resolution", "0"], ["--resolution 0", "out of range"]),
    (["--methods", "muse", "--multi-resolution", "0,16"], ["--multi-resolution 0", "out of range"]),
    (["--methods", "deepinversion", "--multi-resolution", "16,32"], ["--multi-resolution 16,32", "one resolution"]),
    (["--methods", "cmi", "--multi-resolution", "16,32"], ["cmi", "one resolution"]),
])
def test_capability_errors_are_one_line_with_exit_2(tmp_path: Path, args: list[str], pieces: list[str]) -> None:
    one_line_error(["run", "--dataset", "digits", "--smoke", "--out", str(tmp_path), *args], *pieces)
    assert not (tmp_path / "runs.csv").exists()  # refused before any work


def test_online_schedule_fixes_fresh_images_by_the_ratio_and_steps_by_the_budget() -> None:
    hp = resolve_hparams(TinyOnlineHparams, "digits", {"kd_steps": "40", "synth_batch": "64",
                                                        "final_kd_steps": "5"}, "tiny_online")
    schedule = plan_schedule("equal", hp, 104)  # 13 fresh batches of 8; 40/64 * 104 + 5 = 70 student steps
    assert schedule.source == "online" and schedule.budget == "images"
    assert schedule.images == 104 and schedule.kd_steps == 70
    assert [r.images for r in schedule.rounds] == [8] * 13  # round_steps 3 is below one batch's 5-6 steps
    assert sorted({r.kd_steps for r in schedule.rounds}) == [5, 6]
    fresh_hp = resolve_hparams(TinyOnlineHparams, "digits", {"budget": "fresh"}, "tiny_online")
    fresh = plan_schedule("equal", fresh_hp, 104)
    assert [r.kd_steps for r in fresh.rounds] == [3, 3, 3, 3, 1] and fresh.images == 104  # a batch a step
    steps = resolve_hparams(TinyOnlineHparams, "digits", {"budget": "steps", "paper_steps": "7"}, "tiny_online")
    assert plan_schedule("equal", steps, 104).kd_steps == 7 and plan_schedule("equal", steps, 104).images == 56
    assert plan_schedule("equal", steps, 104).budget == "steps"
    with pytest.raises(UserError, match="paper_steps"):
        resolve_hparams(TinyOnlineHparams, "digits", {"budget": "steps"}, "tiny_online")
    with pytest.raises(UserError, match="images, fresh, steps"):
        resolve_hparams(TinyOnlineHparams, "digits", {"budget": "epochs"}, "tiny_online")


def test_online_draws_spread_batches_evenly_and_start_every_round_with_one() -> None:
    draws = [online_draws(i + 1, 3, 8) > online_draws(i, 3, 8) for i in range(8)]
    assert draws[0] and sum(draws) == 3
    assert all(online_draws(i + 1, 4, 4) > online_draws(i, 4, 4) for i in range(4))


def online_run(tmp_path: Path, n_total: int = 104, seed: int = 0, **overrides: str) -> tuple[DistillationRun, list]:
    """A tiny online run whose every draw is recorded."""
    ctx = tiny_ctx(seed)
    method = TinyOnline(ctx, resolve_hparams(TinyOnlineHparams, "digits", overrides, "tiny_online"))
    drawn: list[torch.Tensor] = []
    draw = method.draw

    def recorded(n: int) -> Any:
        batch = draw(n)
        drawn.append(batch.images.clone())
        return batch

    method.draw = recorded  # type: ignore[method-assign]
    split = SPEC.open().test_split().subset(20)
    run = DistillationRun(method, ctx, split, plan_schedule("equal", method.hp, n_total),
                          checkpoint_path=tmp_path / "checkpoint.pt")
    return run, drawn


@pytest.mark.parametrize("budget, steps", [("images", 81), ("fresh", 13)])
def test_an_online_method_sees_exactly_the_budgeted_number_of_distinct_images(tmp_path: Path, budget: str,
                                                                              steps: int) -> None:
    run, drawn = online_run(tmp_path, budget=budget)  # 104 images: 13 batches of 8; images: 50/64 * 104 steps
    trained, stepped = [], []
    train_generator, step = run.method.train_generator, run.distiller.step
    run.method.train_generator = lambda info: (trained.append(info.index), train_generator(info))[1]
    run.distiller.step = lambda groups, size: (stepped.append(groups[0][0]), step(groups, size))[1]
    outcome = run.run()
    images = torch.cat(drawn)
    assert images.shape[0] == outcome.n_synthetic == 104
    assert torch.unique(images.flatten(1), dim=0).shape[0] == 104  # all distinct
    assert len(stepped) == run.schedule.kd_steps == steps
    assert all(any(torch.equal(x, d) for d in drawn) for x in stepped)  # every student batch is a fresh draw
    assert len(trained) == -(-steps // 2)  # the generator trains before every s_steps = 2 student steps
    assert outcome.curve[-1].images == 104
    assert len(run.bank) == 8  # the last batch only, kept for sample grids


def test_online_resume_is_bit_identical(tmp_path: Path) -> None:
    whole, _ = online_run(tmp_path / "whole")
    expected = whole.run()

    class Stop(Exception):
        pass

    first, _ = online_run(tmp_path / "split")

    def stop_after_two(done: int, total: int, state: Any) -> None:
        if done == 2:
            raise Stop

    first.on_round = stop_after_two
    with pytest.raises(Stop):
        first.run()
    second, _ = online_run(tmp_path / "split")
    assert second.try_resume() and second.state.next_round == 2
    resumed = second.run()
    assert [p.student_acc for p in resumed.curve] == [p.student_acc for p in expected.curve]
    for (name, a), b in zip(whole.ctx.student.state_dict().items(), second.ctx.student.state_dict().values()):
        assert torch.equal(a, b), name
    assert len(expected.curve) == len(resumed.curve) > 2
    for a, b in zip(whole.method.generator.parameters(), second.method.generator.parameters()):
        assert torch.equal(a, b)


def test_the_engine_passes_student_features_only_when_declared() -> None:
    seen: list[StudentStep] = []

    class Probe(TinyOnline):
        wants = False

        @property
        def needs_student_features(self) -> bool:
            return self.wants

        def student_loss(self, step: StudentStep) -> dict[str, torch.Tensor]:
            seen.append(step)
            if step.features is not None:  # the features are those of the forward that gave the logits
                torch.testing.assert_close(self.ctx.student.classifier(step.features).float(), step.s_logits)
            return super().student_loss(step)

    for wants in (False, True):
        ctx = tiny_ctx()
        method = Probe(ctx, resolve_hparams(TinyOnlineHparams, "digits", {}, "tiny_online"))
        method.wants = wants
        run = DistillationRun(method, ctx, SPEC.open().test_split().subset(10), plan_schedule("equal", method.hp, 16))
        run.run()
        step = seen[-1]
        assert step.s_logits.shape == step.t_logits.shape == (8, 10) and step.inputs.shape == (8, 3, 32, 32)
        if wants:
            width = ctx.student.classifier.in_features
            assert step.features is not None and step.features.shape == (8, width)
        else:
            assert step.features is None


def test_generator_terms_are_a_public_hook_with_cached_passes() -> None:
    ctx = tiny_ctx()
    method = TinyOnline(ctx, resolve_hparams(TinyOnlineHparams, "digits", {}, "tiny_online"))
    labels = torch.arange(8) % 10
    step = GeneratorStep(method.generate(method.round_latent(labels), 32), labels)
    terms = method.generator_terms(step)
    assert set(terms) == {"oh", "adv"}  # bn weight 0 in OnlineHparams' default: no BN term
    assert method.teacher_pass(step) is step.teacher and method.student_pass(step) is step.student
    assert step.student.features is not None and step.inputs.shape == (8, 3, 32, 32)


def test_resume_is_bit_identical_for_a_bank_method(tmp_path: Path) -> None:
    def fast_run(folder: Path) -> DistillationRun:
        ctx = tiny_ctx(3)
        cls = METHODS.get("fast")
        tiny = {"synth_batch": "16", "g_steps": "2", "kd_steps": "4", "kd_batch": "16", "warmup_rounds": "1",
                "final_kd_steps": "3"}
        method = cls(ctx, resolve_hparams(cls.Hparams, "digits", tiny, "fast"))
        return DistillationRun(method, ctx, SPEC.open().test_split().subset(20), plan_schedule("equal", method.hp, 64),
                               checkpoint_path=folder / "checkpoint.pt")

    whole = fast_run(tmp_path / "whole")
    whole.run()

    class Stop(Exception):
        pass

    first = fast_run(tmp_path / "split")
    first.on_round = lambda done, total, state: (_ for _ in ()).throw(Stop) if done == 2 else None
    with pytest.raises(Stop):
        first.run()
    second = fast_run(tmp_path / "split")
    assert second.try_resume()
    second.run()
    for (name, a), b in zip(whole.ctx.student.state_dict().items(), second.ctx.student.state_dict().values()):
        assert torch.equal(a, b), name
    assert torch.equal(whole.bank.images(32), second.bank.images(32))


def test_methods_lists_all_nine() -> None:
    out = ok(["methods"])
    for name in ALL_METHODS:
        assert name in out


def test_all_nine_run_end_to_end_on_digits_at_a_tiny_budget(tmp_path: Path, digits_teacher: Any) -> None:
    from dfkd_bench.runner import run as run_api

    rows = run_api(list(ALL_METHODS), dataset="digits", ratio=0.05, seed=0, smoke=True, out=tmp_path, device="cpu")
    assert [r["method"] for r in rows] == list(ALL_METHODS)
    for row in rows:
        assert row["status"] == "ok", row
        assert row["budget"] == "images" and int(row["n_synthetic"]) > 0
        assert 0 <= float(row["student_acc"]) <= 100


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import statement of a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            found.append((node.module or "", [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names]
    return found


@pytest.mark.parametrize("name", NEW_METHODS)
def test_new_methods_use_only_names_exported_by_the_api(name: str) -> None:
    exported = {"dfkd_bench.api": set(api.__all__)}
    for module, names in _imports(METHOD_DIR / f"{name}.py"):
        if module.split(".")[0] != "dfkd_bench":
            continue
        assert module in exported, f"{name}.py imports {module}"
        assert set(names) <= exported[module], f"{name}.py imports {set(names) - exported[module]} from {module}"


def test_a_generator_method_runs_from_one_file_through_plugin(tmp_path: Path, digits_teacher: Any,
                                                              clean_methods: None) -> None:
    plugin = Path(__file__).parent / "example_generator_plugin.py"
    out = tmp_path / "results"
    ok(["run", "--plugin", str(plugin), "--methods", "spread_gen", "--dataset", "digits", "--smoke", "--device", "cpu",
        "--out", str(out), "--quiet"])
    from dfkd_bench.outputs import read_runs

    (row,) = read_runs(out).values()
    assert row["method"] == "spread_gen" and row["status"] == "ok", row
    cls = METHODS.get("spread_gen")
    method = cls(tiny_ctx(), resolve_hparams(cls.Hparams, "digits", {}, "spread_gen"))
    labels = torch.arange(8)
    step = GeneratorStep(method.generate(method.round_latent(labels), 32), labels)
    assert set(method.generator_terms(step)) == {"bn", "oh", "adv", "spread"}


def test_a_checkpoint_made_with_another_teacher_is_not_resumed(tmp_path: Path) -> None:
    """A killed attempt's checkpoint belongs to its teacher: if the cached teacher changed in between, the
    run starts again (one warning) instead of carrying on another teacher's student and generator."""
    online_run(tmp_path)[0].run()
    assert online_run(tmp_path)[0].try_resume()
    other, _ = online_run(tmp_path, seed=1)  # another (untrained) teacher, the same checkpoint path
    with pytest.warns(UserWarning, match="another teacher"):
        assert not other.try_resume()
    assert other.state.next_round == 0
