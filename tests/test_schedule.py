"""The two budget protocols. `paper` against numbers derived by hand from the reference scripts (each
case names its script); `equal` gives every method the same student steps per image at any ratio."""

from __future__ import annotations

import pytest

from cli_helpers import ok
from dfkd_bench.runner import run

# (method, dataset, ratio) -> (images, rounds, warm-up rounds, KD steps, generator-reset rounds, reset_l0 round)
PAPER_CASES = {
    # tmtuan1307/NAYER scripts/nayer_100.sh, run/nayer_200.sh, run/nayer_300.sh: --warmup 20 --gwp_loops 10
    # --g_loops 2 --synthesis_batch_size 400 --kd_steps 400 --g_life 10; --epochs 120/220/320 counts warm-up.
    # Images: 20*10*400 + E*2*400; KD: E*400; resets at epochs 10, 20, 30, ... = rounds 100, 200, 220, ...
    ("nayer", "cifar100", 3.2): (160000, 400, 200, 40000, 11, None),
    ("nayer", "cifar100", 4.8): (240000, 600, 200, 80000, 21, None),
    ("nayer", "cifar100", 6.4): (320000, 800, 200, 120000, 31, None),
    # zju-vipa/Fast-Datafree scripts/fast_cifar.sh (Fast-2/5/10 alike): --warmup 20 --epochs 220 --batch_size 256
    # --kd_steps 400 --ep_steps 400 (one round an epoch), --reset_l0 1 (fast_meta.py @0dcecbc lines 105/110: at
    # epoch 120 + warmup counted from 1, so 0-based epoch 139).
    ("fast", "cifar10", 1.1264): (56320, 220, 20, 80000, 0, 139),
    ("fast", "cifar100", 1.1264): (56320, 220, 20, 80000, 0, 139),
    # zju-vipa/Fast-Datafree scripts/deepinv_cifar.sh: --epochs 200 --batch_size 256 --kd_steps 400 --ep_steps 400.
    ("deepinversion", "cifar10", 1.024): (51200, 200, 0, 80000, 0, None),
    # zju-vipa/Fast-Datafree logs/log-imagenet-resnet50_imagenet-resnet18_imagenet-FastDFKD_50.txt: --epochs 400
    # --ep_steps 1000 --kd_steps 100 --batch_size 100, start_kd 0: 400*10 rounds of 100 images, 100 KD steps each.
    ("fast", "imagenet", 400000 / 1281167): (400000, 4000, 0, 400000, 0, None),
    # tmtuan1307/NAYER run/nayer_200.sh, Tiny-ImageNet: --synthesis_batch_size 200 --gwp_loops 20 --g_loops 4
    # --kd_steps 1000 --epochs 220 --warmup 20: 20*20*200 + 200*4*200 images, 200*1000 KD steps.
    ("nayer", "tiny-imagenet", 2.4): (240000, 1200, 400, 200000, 21, None),
}


@pytest.mark.parametrize("case", list(PAPER_CASES), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}")
def test_paper_schedule_matches_the_reference_scripts(case: tuple[str, str, float]) -> None:
    method, dataset, ratio = case
    images, rounds, warmup, kd, resets, l0 = PAPER_CASES[case]
    schedule = run([method], dataset=dataset, ratio=ratio, protocol="paper", dry_run=True)[0].schedule
    assert (schedule.images, len(schedule.rounds), schedule.warmup_rounds, schedule.kd_steps) == \
        (images, rounds, warmup, kd)
    assert len(schedule.reset_rounds()) == resets
    assert schedule.reset_l0_rounds() == ([l0] if l0 is not None else [])
    assert schedule.lr_per_epoch and schedule.final_kd_steps == 0


def test_nayer_resets_count_epochs_in_and_after_warmup() -> None:
    """g_life 10 epochs: every 100 rounds during warm-up (10 rounds an epoch), every 20 after (2 an epoch)."""
    schedule = run(["nayer"], dataset="cifar100", ratio=4.8, protocol="paper", dry_run=True)[0].schedule
    assert schedule.reset_rounds()[:4] == [100, 200, 220, 240]
    kd_rounds = [r for r in schedule.rounds if r.kd_steps]
    assert all(r.kd_steps == 400 and not r.warmup for r in kd_rounds) and len(kd_rounds) == 200
    assert all(r.index % 2 == 1 for r in kd_rounds)  # KD after the second round of each epoch


@pytest.mark.parametrize("ratio", [0.01, 0.05, 0.1, 0.5, 1.0, 2.0])
@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_equal_gives_every_method_the_same_steps_per_image(ratio: float, dataset: str) -> None:
    resolved = run(["nayer", "fast", "deepinversion", "muse"], dataset=dataset, ratio=ratio, dry_run=True)
    sizes = {r.hparams.synth_batch for r in resolved}
    assert len(sizes) > 1  # different round sizes (400, 256) ...
    images = {r.schedule.images for r in resolved}
    assert images == {round(ratio * 50000)}  # ... the same image budget
    steps = {r.schedule.kd_steps for r in resolved}
    assert len(steps) == 1  # ... and the same student steps, whatever the warm-up
    assert {r.hparams.kd_batch for r in resolved} == {256} and {r.hparams.lr for r in resolved} == {0.2}
    for r in resolved:
        assert r.schedule.warmup_rounds < len(r.schedule.rounds)  # always at least one KD round


def test_equal_warmup_is_a_capped_fraction() -> None:
    small = run(["nayer"], dataset="cifar100", ratio=0.1, dry_run=True)[0].schedule
    assert small.warmup_rounds == int(0.33 * len(small.rounds))  # not the 200-round cap
    large = run(["nayer"], dataset="cifar100", ratio=10, dry_run=True)[0].schedule
    assert large.warmup_rounds == 200


def test_digits_presets_keep_their_schedule() -> None:
    """The digits figures depend on it: ratio 0.5 is 12 rounds of 64 (2 warm-up), 0.625 steps an image + 200."""
    schedule = run(["fast"], dataset="digits", ratio=0.5, dry_run=True)[0].schedule
    assert (len(schedule.rounds), schedule.warmup_rounds, schedule.images) == (12, 2, 718)
    assert schedule.kd_steps == round(0.625 * 718) + 200


def test_paper_without_a_reference_is_a_one_line_error() -> None:
    from cli_helpers import one_line_error

    one_line_error(["run", "--methods", "fast", "--dataset", "digits", "--protocol", "paper", "--dry-run"],
                   "no reference schedule for digits", "cifar10")


def test_dry_run_prints_the_schedule_without_data() -> None:
    out = ok(["run", "--methods", "nayer,fast", "--dataset", "cifar100", "--ratio", "4.8", "--protocol", "paper",
              "--dry-run"])
    assert "600 rounds in 220 epochs, 240000 images (200 warm-up rounds); KD 80000 steps" in out
    assert "reset_l0 at round 139" in out


def test_one_policy_lays_out_every_protocol_and_source() -> None:
    """`plan_schedule` is the one entry: bank or online by the hparams' declared source, paper or equal by
    the protocol (a smoke run takes equal), reset_l0 and g_life from the hparams' `generator_resets` hook."""
    from dfkd_bench.config import resolve_hparams
    from dfkd_bench.errors import UserError
    from dfkd_bench.plugins import METHODS
    from dfkd_bench.schedule import PROTOCOLS, plan_schedule

    fast, dfad = METHODS.get("fast").Hparams, METHODS.get("dfad").Hparams
    bank = resolve_hparams(fast, "cifar10", {"reset_l0": "true"}, "fast")
    online = resolve_hparams(dfad, "cifar10", {}, "dfad", protocol="paper")
    reference, online_reference = fast.PAPER["cifar10"], dfad.PAPER["cifar10"]
    assert (bank.SAMPLE_SOURCE, online.SAMPLE_SOURCE) == ("bank", "online")
    paper = plan_schedule("paper", bank, 56320, reference)
    assert (paper.protocol, paper.source, paper.lr_per_epoch, paper.reset_l0_rounds()) == ("paper", "bank", True, [139])
    equal = plan_schedule("equal", bank, 56320, reference)
    assert (equal.protocol, equal.source, equal.lr_per_epoch) == ("equal", "bank", False)
    assert equal.reset_l0_rounds() == [round(139 / 220 * len(equal.rounds))]  # the reference's fraction
    assert plan_schedule("paper", bank, 56320, reference, smoke=True).protocol == "equal"
    online_paper = plan_schedule("paper", online, 2 * 400 * online.kd_batch, online_reference)
    assert (online_paper.source, len(online_paper.rounds), online_paper.kd_steps) == ("online", 2, 800)
    assert plan_schedule("equal", online, 10 * online.kd_batch).source == "online"
    with pytest.raises(UserError, match="choose from: " + ", ".join(PROTOCOLS)):
        plan_schedule("fast", bank, 100)
    with pytest.raises(UserError, match="no reference schedule"):
        plan_schedule("paper", bank, 100, None)
