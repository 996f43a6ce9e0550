"""`run --dry-run --format json`: each run's whole plan as data, compared with numbers read from the
reference scripts and logs (each case names its source: repository, commit, file)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from cli_helpers import ok, one_line_error

FAST_COMMIT = "zju-vipa/Fast-Datafree@0dcecbc"
NAYER_COMMIT = "tmtuan1307/NAYER@c6bedcd"


def plans(*args: str) -> list[dict[str, Any]]:
    """The JSON plans `dfkd-bench run ... --dry-run --format json` prints."""
    return json.loads(ok(["run", *args, "--dry-run", "--format", "json"]))


def cosine_annealing(base: float, eta_min: float, t_max: int, epoch: int) -> float:
    """torch's CosineAnnealingLR closed form after `epoch` steps (the references step it once an epoch)."""
    return eta_min + (base - eta_min) * (1 + math.cos(math.pi * epoch / t_max)) / 2


# NAYER{100,200,300} on CIFAR-100 (NAYER_COMMIT scripts/nayer_{100,200,300}.sh, datafree_kd.py ~338):
# --synthesis_batch_size 400 --batch_size 512 --lr 0.2 --warmup 20 --gwp_loops 10 --g_loops 2 --kd_steps 400
# (default) --g_steps 40 --g_life 10, --epochs 120/220/320; CosineAnnealingLR(T_max = epochs - warmup,
# eta_min 2e-4) stepped after each post-warm-up epoch; T 20 (default).
@pytest.mark.parametrize("epochs", [120, 220, 320])
def test_nayer_cifar100_plan_matches_the_scripts(epochs: int) -> None:
    post = epochs - 20
    images = 20 * 10 * 400 + post * 2 * 400
    plan = plans("--methods", "nayer", "--dataset", "cifar100", "--ratio", str(images / 50000),
                 "--protocol", "paper")[0]
    s = plan["schedule"]
    assert (s["images"], s["rounds"], s["epochs"], s["warmup_rounds"]) == (images, 200 + 2 * post, epochs, 200)
    assert s["kd_steps"] == post * 400 and s["final_kd_steps"] == 0
    assert s["kd_steps_after_round"][:200] == [0] * 200 and s["kd_steps_after_round"][200:202] == [0, 400]
    assert plan["student_recipe"]["batch"] == 512 and plan["student_recipe"]["temperature"] == 20
    assert plan["student_recipe"]["lr"] == 0.2 and plan["student_recipe"]["lr_min"] == pytest.approx(2e-4)
    assert len(s["student_lr"]) == post + 1
    for epoch in (0, post // 2, post - 1, post):
        assert s["student_lr"][epoch] == pytest.approx(cosine_annealing(0.2, 2e-4, post, epoch))
    # g_life 10 epochs: epoch 10 (round 100) in warm-up, then every 10 epochs of 2 rounds after it
    assert s["generator_resets"][:4] == [100, 200, 220, 240]
    assert plan["hparams"]["g_steps"] == 40 and plan["hparams"]["synth_batch"] == 400


# Fast-5 and Fast-10 on CIFAR-100 (FAST_COMMIT scripts/fast_cifar.sh, datafree_kd.py ~324/~399):
# --batch_size 256 --lr 0.2 --kd_steps 400 --ep_steps 400 --warmup 20 --epochs 220 --T 20; Fast-5: --g_steps 5
# --lr_g 3e-3 --lr_z 0.01; Fast-10: --g_steps 10 --lr_g 2e-3 --lr_z 0.01; CosineAnnealingLR(T_max 200,
# eta_min 2e-4) stepped after each post-warm-up epoch; reset_l0 at the 0-based epoch 139 (fast_meta.py
# increments its epoch counter before comparing it with 120 + warmup).
@pytest.mark.parametrize("g_steps,lr_g", [(5, 3e-3), (10, 2e-3)])
def test_fast_cifar100_plan_matches_the_script(g_steps: int, lr_g: float) -> None:
    plan = plans("--methods", "fast", "--dataset", "cifar100", "--ratio", str(220 * 256 / 50000),
                 "--protocol", "paper", "--set", f"fast.g_steps={g_steps}", "--set", f"fast.lr_g={lr_g}")[0]
    s, hp = plan["schedule"], plan["hparams"]
    assert (s["images"], s["rounds"], s["warmup_rounds"], s["kd_steps"]) == (220 * 256, 220, 20, 200 * 400)
    assert s["kd_steps_after_round"] == [0] * 20 + [400] * 200
    assert (hp["g_steps"], hp["lr_g"], hp["lr_z"], hp["synth_batch"]) == (g_steps, lr_g, 0.01, 256)
    assert plan["student_recipe"]["batch"] == 256 and plan["student_recipe"]["temperature"] == 20
    assert s["student_lr"][100] == pytest.approx(cosine_annealing(0.2, 2e-4, 200, 100))
    assert s["reset_l0"] == [139] and s["generator_resets"] == []
    assert s["eval_points"] == list(range(1, 221))  # once an epoch, warm-up included
    assert plan["generator_parameters"] > 0


# Fast ImageNet (FAST_COMMIT logs/log-imagenet-resnet50_imagenet-resnet18_imagenet-FastDFKD_50.txt and
# datafree_kd_imagenet.py ~366/~428): --epochs 400 --ep_steps 1000 --kd_steps 100, batch_size 100;
# CosineAnnealingLR(T_max = 400 epochs, eta_min 0) stepped once an epoch after the evaluation. The log
# prints Lr=0.0976 at Epoch=40, Lr=0.0500 at Epoch=200 and Lr=0.0000 at Epoch=399; 400 evaluations.
def test_fast_imagenet_plan_anneals_over_400_epochs() -> None:
    plan = plans("--methods", "fast", "--dataset", "imagenet", "--ratio", str(400 * 1000 / 1281167),
                 "--protocol", "paper")[0]
    s = plan["schedule"]
    assert (s["images"], s["rounds"], s["epochs"], s["kd_steps"]) == (400000, 4000, 400, 400000)
    assert set(s["kd_steps_after_round"]) == {100}
    assert round(s["student_lr"][40], 4) == 0.0976
    assert round(s["student_lr"][200], 4) == 0.0500
    assert round(s["student_lr"][399], 4) == 0.0000
    assert s["eval_points"] == list(range(10, 4001, 10))  # once an epoch of 10 rounds
    assert plan["student_recipe"]["batch"] == 100 and plan["student_recipe"]["temperature"] == 5


def test_equal_plan_lr_is_per_kd_step() -> None:
    plan = plans("--methods", "fast", "--ratio", "0.5")[0]
    s = plan["schedule"]
    assert s["lr_schedule"] == "cosine per KD step" and s["epochs"] == s["rounds"] == 12
    assert s["student_lr"][0] == pytest.approx(plan["student_recipe"]["lr"])
    assert s["student_lr"][-1] == pytest.approx(plan["student_recipe"]["lr_min"])
    assert s["kd_steps"] == sum(s["kd_steps_after_round"]) + s["final_kd_steps"]
    assert s["eval_points"] == list(range(1, 13))


def test_json_format_needs_a_dry_run() -> None:
    one_line_error(["run", "--methods", "fast", "--format", "json"], "--dry-run")


DATAFREE_COMMIT = "zju-vipa/DataFree@9e79fa9"


# CMI from scratch on CIFAR-10 (DATAFREE_COMMIT scripts/cmi/scratch_cmi_cifar10_wrn402_wrn161.sh, datafree_kd.py
# ~290/~351): --synthesis_batch_size 256 --batch_size 128 --lr 0.1 --kd_steps 400 --ep_steps 400 (one round an
# epoch) --g_steps 200 --oh 1.0 --adv 0.5 --bn 1.0 --cr 0.8 --cr_T 0.1 --T 20, --epochs 200 (default);
# CosineAnnealingLR(T_max = epochs), no eta_min, stepped once an epoch.
def test_cmi_cifar10_plan_follows_the_scratch_script() -> None:
    plan = plans("--methods", "cmi", "--dataset", "cifar10", "--ratio", str(200 * 256 / 50000), "--protocol", "paper")[0]
    s, hp = plan["schedule"], plan["hparams"]
    assert (s["images"], s["rounds"], s["warmup_rounds"], s["kd_steps"]) == (200 * 256, 200, 0, 200 * 400)
    assert set(s["kd_steps_after_round"]) == {400}
    assert plan["student_recipe"]["batch"] == 128 and plan["student_recipe"]["lr"] == 0.1
    assert plan["student_recipe"]["lr_min"] == 0 and plan["student_recipe"]["temperature"] == 20
    assert s["student_lr"][100] == pytest.approx(cosine_annealing(0.1, 0.0, 200, 100))
    assert (hp["g_steps"], hp["oh"], hp["adv"], hp["bn"], hp["cr"], hp["cr_T"]) == (200, 1.0, 0.5, 1.0, 0.8, 0.1)
    assert "scratch" in s["reference"] and s["notes"]


# DeepInversion on CIFAR-10 (FAST_COMMIT scripts/deepinv_cifar.sh, datafree/synthesis/deepinversion.py,
# datafree_kd.py ~324): --batch_size 256 --lr 0.1 --kd_steps 400 --ep_steps 400 --epochs 200 --g_steps 1000
# --lr_g 0.1 --bn 10 --oh 1 --adv 1 --T 20; CosineAnnealingLR(200, eta_min 2e-4) stepped once an epoch.
def test_deepinversion_cifar10_plan_follows_one_script() -> None:
    plan = plans("--methods", "deepinversion", "--dataset", "cifar10", "--ratio", str(200 * 256 / 50000),
                 "--protocol", "paper")[0]
    s, hp = plan["schedule"], plan["hparams"]
    assert (s["images"], s["rounds"], s["warmup_rounds"], s["kd_steps"]) == (200 * 256, 200, 0, 200 * 400)
    assert plan["student_recipe"]["batch"] == 256 and plan["student_recipe"]["lr"] == 0.1
    assert plan["student_recipe"]["lr_min"] == pytest.approx(2e-4) and plan["student_recipe"]["temperature"] == 20
    assert s["student_lr"][100] == pytest.approx(cosine_annealing(0.1, 2e-4, 200, 100))
    assert (hp["iterations"], hp["synth_batch"]) == (1000, 256)
    assert "deepinv_cifar.sh" in s["reference"] and plan["generator_parameters"] == 0
