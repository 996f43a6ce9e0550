"""NAYER and MUSE: generator pieces, the CAM, the loss terms and their switches, resolutions, runs, resume."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dfkd_bench.options import RunConfig
from dfkd_bench.data import get_dataset
from dfkd_bench.engine import DistillationRun, GeneratorStep, StudentStep
from dfkd_bench.errors import UserError
from dfkd_bench.methods.muse import Muse, class_activation_map
from dfkd_bench.methods.nayer import Nayer, NoisyLabelGenerator
from dfkd_bench.models.hooks import CONV_MAP, PENULTIMATE, ForwardRecorder
from dfkd_bench.resolve import resolve
from dfkd_bench.runner import run_many
from dfkd_bench.schedule import RoundInfo, plan_schedule
from method_helpers import TINY, make_ctx, make_method

class TinyConvNet(nn.Module):
    """One conv layer (the CAM's feature_layer), global pooling and a linear classifier."""

    def __init__(self, channels: int = 3, num_classes: int = 4) -> None:
        super().__init__()
        self.feature_layer = nn.Sequential(nn.Conv2d(3, channels, 3, 2, 1), nn.ReLU())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.feature_layer(x).mean(dim=(2, 3)))


# --- CAM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [4, 10])
def test_cam_matches_hand_computation(size: int) -> None:
    torch.manual_seed(0)
    model = TinyConvNet().eval()
    tap = ForwardRecorder(model, {"conv_map": CONV_MAP}, active=True)
    x = torch.randn(2, 3, 8, 8)
    labels = torch.tensor([1, 3])
    model(x)
    conv = model.feature_layer(x)
    assert torch.equal(tap.latest("conv_map"), conv)
    w = model.classifier.weight
    expected = []
    for i, y in enumerate(labels.tolist()):
        cam = torch.zeros(conv.shape[2:])
        for k in range(conv.shape[1]):
            cam += w[y, k] * conv[i, k]
        cam = cam.clamp_min(0)
        cam = cam / (cam.max() + 1e-8)
        expected.append(cam)
    expected = torch.stack(expected).unsqueeze(1)
    if size != conv.shape[-1]:
        expected = F.interpolate(expected, size=(size, size), mode="bilinear", align_corners=False)
    got = class_activation_map(tap.latest("conv_map"), w, labels, size)
    assert got.shape == (2, 1, size, size)
    assert not got.requires_grad
    torch.testing.assert_close(got, expected.detach())
    assert got.min() >= 0 and got.max() <= 1 + 1e-6


# --- the generator -----------------------------------------------------------------------------------


def test_noisy_layer_redraw_changes_images_for_same_labels() -> None:
    torch.manual_seed(0)
    gen = NoisyLabelGenerator(embed_dim=8, noise_dim=16, ngf=4, resolutions=(8, 16), out_chans=3, chunk=4,
                              max_batch=8)
    emb = torch.randn(4, 8).repeat(2, 1)  # the same four labels in both chunks
    rng = torch.Generator().manual_seed(1)
    gen.reset_noise(rng)
    first = gen(emb, 8)
    assert first.shape == (8, 3, 8, 8) and gen(emb, 16).shape == (8, 3, 16, 16)
    assert not torch.allclose(first[:4], first[4:])  # different chunks, different noisy layers
    gen.reset_noise(rng)
    assert not torch.allclose(first, gen(emb, 8))
    assert torch.equal(gen.noise_bias, torch.zeros_like(gen.noise_bias))
    with pytest.raises(ValueError):
        gen(torch.randn(9, 8), 8)


def test_synthesize_shapes_range_and_balanced_labels() -> None:
    ctx = make_ctx()
    method = make_method(Nayer, ctx, synth_batch=24)
    batch = method.synthesize(24)
    assert batch.images.shape == (24, 3, 32, 32)
    assert batch.images.min() >= 0 and batch.images.max() <= 1
    counts = torch.bincount(batch.labels, minlength=10)
    assert counts.min() >= 2 and torch.equal(batch.labels[:20], torch.arange(10).repeat(2))
    single = method.synthesize(1)
    assert single.images.shape == (1, 3, 32, 32) and single.labels.shape == (1,)


def test_generator_loss_falls() -> None:
    ctx = make_ctx()
    method = make_method(Nayer, ctx, g_steps=12, synth_augment=False, lr_g=0.01)
    losses: list[float] = []
    loss_fn = method.generator_loss

    def recorded(step: GeneratorStep) -> torch.Tensor:
        loss = loss_fn(step)
        losses.append(float(loss.detach()))
        return loss

    method.generator_loss = recorded  # type: ignore[method-assign]
    batch = method.synthesize(16)
    assert len(losses) == 12
    assert min(losses[-3:]) < losses[0]
    assert batch.loss == pytest.approx(min(losses))


def test_generator_reinitialised_every_g_life_rounds() -> None:
    """The schedule decides the resets (RoundInfo.reset_generator; every g_life = 3 rounds here):
    NAYER re-initialises exactly on the flagged rounds and counts nothing itself."""
    ctx = make_ctx()
    method = make_method(Nayer, ctx, g_life=3, warmup_rounds=2, g_steps=1)
    flags = [r > 0 and r % 3 == 0 for r in range(7)]
    resets = []
    for r, flag in enumerate(flags):
        round_info = RoundInfo(index=r, epoch=r, images=16, warmup=r < 2, kd_steps=0 if r < 2 else 1,
                               reset_generator=flag)
        before = method.generator
        method.synthesize(16, round_info)
        resets.append(method.generator is not before)
    assert resets == flags == [False, False, False, True, False, False, True]
    # a flag on a round that the count would not pick still resets: the round info decides
    before = method.generator
    method.synthesize(16, RoundInfo(index=7, epoch=7, images=16, warmup=False, kd_steps=1, reset_generator=True))
    assert method.generator is not before


def test_check_resolution() -> None:
    Nayer.check_resolution(16)
    with pytest.raises(UserError, match="multiples of 4"):
        Nayer.check_resolution(18)


# --- MUSE's switches -----------------------------------------------------------------------------------


def _terms(method: Muse, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict[str, torch.Tensor], int, int]:
    """The generator terms (augmentation RNG reset first), teacher and student forward counts."""
    models = {"teacher": method.ctx.teacher, "student": method.ctx.student}
    calls = dict.fromkeys(models, 0)

    def counter(name: str) -> Any:
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    hooks = [model.register_forward_pre_hook(counter(name)) for name, model in models.items()]
    method.ctx.generator.manual_seed(7)
    try:
        terms = method.generator_terms(GeneratorStep(images, labels))
    finally:
        for h in hooks:
            h.remove()
    return terms, calls["teacher"], calls["student"]


@pytest.fixture
def images_labels() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(3)
    return torch.rand(16, 3, 16, 16), torch.arange(10).repeat(2)[:16]


AFTER_WARMUP = RoundInfo(index=3, epoch=3, images=16, warmup=False, kd_steps=1)


def _muse_after_warmup(**overrides: Any) -> Muse:
    method = make_method(Muse, make_ctx((16,)), **overrides)
    method.round = AFTER_WARMUP  # the round the engine's synthesize(n, round) would set
    return method


def test_muse_generator_terms_switch_off_exactly(images_labels: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = images_labels
    full, t_full, s_full = _terms(_muse_after_warmup(cam=0.5, aed=0.5, adv=1.0), images, labels)
    assert set(full) == {"bn", "oh", "adv", "cam", "aed"}
    assert (t_full, s_full) == (2, 1)  # the CAM forward is the second teacher pass; aed reuses adv's student pass
    for switch, removed in (("cam", "cam"), ("aed", "aed"), ("adv", "adv")):
        terms, t_calls, _ = _terms(_muse_after_warmup(**{"cam": 0.5, "aed": 0.5, "adv": 1.0, switch: 0}),
                                   images, labels)
        assert set(terms) == set(full) - {removed}
        for key, value in terms.items():
            torch.testing.assert_close(value, full[key])
        assert t_calls == (1 if switch == "cam" else 2)
    terms, _, s_calls = _terms(_muse_after_warmup(adv=0, aed=0), images, labels)
    assert s_calls == 0 and "aed" not in terms and "adv" not in terms
    terms, _, s_calls = _terms(_muse_after_warmup(adv=0, aed=0.5), images, labels)
    assert s_calls == 1 and set(terms) == {"bn", "oh", "cam", "aed"}
    torch.testing.assert_close(terms["aed"], full["aed"])


def test_muse_warmup_has_no_student_terms(images_labels: tuple[torch.Tensor, torch.Tensor]) -> None:
    method = make_method(Muse, make_ctx((16,)), adv=1.0, aed=0.5, warmup_rounds=2)
    method.round = RoundInfo(index=0, epoch=0, images=16, warmup=True, kd_steps=0)  # the first warm-up round
    terms, _, s_calls = _terms(method, *images_labels)
    assert set(terms) == {"bn", "oh", "cam"} and s_calls == 0


def test_muse_nayer_terms_equal_nayer(images_labels: tuple[torch.Tensor, torch.Tensor]) -> None:
    images, labels = images_labels
    muse, _, _ = _terms(_muse_after_warmup(cam=0, aed=0, adv=1.0), images, labels)
    nayer = make_method(Nayer, make_ctx((16,)), adv=1.0)
    nayer.round = AFTER_WARMUP
    nayer.ctx.generator.manual_seed(7)
    reference = nayer.generator_terms(GeneratorStep(images, labels))
    assert set(muse) == set(reference)
    for key in reference:
        torch.testing.assert_close(muse[key], reference[key])


def test_muse_student_loss_ed_switch() -> None:
    for ed in (0.0, 1.0):
        method = make_method(Muse, make_ctx((16,)), ed=ed)
        assert method.student_parameters() == list(method.projection.parameters())
        assert method.needs_student_features == bool(ed)  # the engine then records the features
        x = torch.rand(8, 3, 32, 32)
        labels = torch.arange(8)
        # what the engine's Distiller records when needs_student_features
        tap = ForwardRecorder(method.ctx.student, {"penultimate": PENULTIMATE})
        with tap.capture():
            s_logits = method.ctx.student(x)
        tap.close()
        t_logits = method.ctx.teacher(x)
        features = tap.latest("penultimate") if method.needs_student_features else None
        terms = method.student_loss(StudentStep(x, labels, s_logits, t_logits, features))
        assert set(terms) == ({"kd", "ed"} if ed else {"kd"})
        if ed:
            feats = tap.latest("penultimate")
            cos = F.cosine_similarity(method.projection(feats), method.embeddings[labels], dim=1)
            torch.testing.assert_close(terms["ed"], (1 - cos).mean())
            terms["ed"].backward()
            assert method.projection.weight.grad is not None


def test_muse_bad_switch_values() -> None:
    with pytest.raises(UserError, match="upsample, native"):
        make_method(Muse, make_ctx((16,)), feed="sideways")
    with pytest.raises(UserError, match="cycle, random"):
        make_method(Muse, make_ctx((16,)), schedule="often")


def test_muse_default_resolution_is_half() -> None:
    resolved = resolve(RunConfig(method="muse", dataset="digits"))
    assert resolved.resolutions == (16,)
    assert resolve(RunConfig(method="muse", dataset="digits", multi_resolution=(16, 32))).resolutions == (16, 32)
    with pytest.raises(UserError):
        resolve(RunConfig(method="nayer", dataset="digits", multi_resolution=(16, 32)))


# --- resolutions seen by teacher, student and bank -------------------------------------------------------


def _run(method: Nayer, n_total: int = 48) -> tuple[Any, dict[str, set[int]]]:
    """A full DistillationRun; returns the outcome and the input sizes the teacher saw per phase."""
    ctx = method.ctx
    seen: dict[str, set[int]] = {"synth": set(), "kd": set()}
    phase = ["kd"]
    hook = ctx.teacher.register_forward_pre_hook(lambda m, inp: seen[phase[0]].add(inp[0].shape[-1]))
    synthesize = method.synthesize

    def tracked(n: int, round: RoundInfo | None = None) -> Any:
        phase[0] = "synth"
        try:
            return synthesize(n, round)
        finally:
            phase[0] = "kd"

    method.synthesize = tracked  # type: ignore[method-assign]
    data = get_dataset("digits").open()
    try:
        schedule = plan_schedule("equal", method.hp, n_total)
        outcome = DistillationRun(method, ctx, data.test_split().subset(50), schedule).run()
    finally:
        hook.remove()
    return outcome, seen


@pytest.mark.parametrize("feed,expected", [("native", 16), ("upsample", 32)])
def test_muse_bank_at_l_and_teacher_sizes(feed: str, expected: int) -> None:
    method = make_method(Muse, make_ctx((16,)), feed=feed, kd_steps=2)
    outcome, seen = _run(method)
    assert outcome.bank.resolutions == [16]
    assert seen == {"synth": {expected}, "kd": {expected}}


def test_muse_multi_resolution_bank_holds_both() -> None:
    method = make_method(Muse, make_ctx((16, 32)), kd_steps=2, schedule="cycle")
    outcome, seen = _run(method, n_total=48)
    assert outcome.bank.resolutions == [16, 32]
    assert len(outcome.bank.labels(16)) == 32 and len(outcome.bank.labels(32)) == 16
    assert seen["synth"] == {32} and seen["kd"] == {32}


def test_muse_random_schedule_draws_from_the_set() -> None:
    method = make_method(Muse, make_ctx((8, 16, 32)), schedule="random")
    drawn = [method.round_resolution(RoundInfo.standalone(index=i)) for i in range(30)]
    assert set(drawn) == {8, 16, 32} and drawn != [(8, 16, 32)[i % 3] for i in range(30)]  # not in turn
    again = [method.round_resolution(RoundInfo.standalone(index=i)) for i in range(30)]
    assert again == drawn  # from the run's seed and the round: the same on every rank and after a resume


# --- end to end ----------------------------------------------------------------------------------------


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "runs.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("method", ["nayer", "muse"])
def test_end_to_end_tiny_run(method: str, tmp_path: Path, digits_teacher: Any) -> None:
    rows = run_many([RunConfig(method=method, ratio=0.05, overrides=dict(TINY))], out_dir=tmp_path)
    assert rows[0]["status"] == "ok", rows[0]["error"]
    written = _rows(tmp_path)
    assert [r["method"] for r in written] == [method]
    assert float(written[0]["student_acc"]) >= 0
    assert written[0]["resolution"] == ("16" if method == "muse" else "32")


@pytest.mark.parametrize("feed", ["upsample", "native"])  # native: one BN-momentum buffer per resolution
def test_muse_resume_matches_uninterrupted_run(tmp_path: Path, digits_teacher: Any, feed: str) -> None:
    config = RunConfig(method="muse", ratio=0.05, overrides={**TINY, "feed": feed}, multi_resolution=(16, 32))
    whole = run_many([config], out_dir=tmp_path / "whole")[0]

    def interrupt(resolved: Any, r: int, n: int, state: Any) -> None:
        if r == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_many([config], out_dir=tmp_path / "resumed", on_round=interrupt)
    run_id = resolve(config).run_id
    assert (tmp_path / "resumed" / "runs" / run_id / "checkpoint.pt").is_file()
    resumed = run_many([config], out_dir=tmp_path / "resumed")[0]
    assert whole["status"] == resumed["status"] == "ok"
    assert resumed["student_acc"] == whole["student_acc"]
    a = torch.load(tmp_path / "whole" / "runs" / run_id / "student.pt")["state_dict"]
    b = torch.load(tmp_path / "resumed" / "runs" / run_id / "student.pt")["state_dict"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)

