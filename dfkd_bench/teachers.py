"""Teachers: trained on the real train split, imported from a file, or from torchvision's weights API;
cached with a card under $DFKD_BENCH_CACHE/teachers and verified against it (sha256) on every load."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .checkpoints import read_state_dict
from .data import DatasetSpec, DataSource, cache_dir
from .data.imagenet_classes import class_indices, imagenet_wnids
from .engine.augment import Normalize
from .engine.checkpoint import save_atomic, write_text_atomic
from .engine.evaluate import accuracy
from .errors import UserError
from .models import MODELS, create_model, model_info, replace_classifier
from .teacher_training import EpochHook, StepHook, TeacherRecipe, recipe_for, train_teacher


IMAGENET_CLASSES = 1000


SMOKE_TEST_IMAGES = 200  # a smoke check evaluates on an evenly spaced subset of the test split


RUN_ARCH_FLAG = "--teacher"  # the option that names the teacher's architecture in `run` (`teacher import`: --arch)


@dataclass
class TeacherCard:
    """What is known about a cached teacher; written next to its weights as JSON."""

    dataset: str
    arch: str
    num_classes: int
    test_acc: float | None
    recipe: dict[str, Any]
    seed: int
    sha256: str
    train_seconds: float
    path: str
    source: str = "trained"
    source_sha256: str = ""  # of the file a teacher was imported from
    restricted_from: int | None = None
    test_images: int = 0
    smoke: bool = False
    created_at: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="microseconds"))

    @classmethod
    def read(cls, path: Path) -> "TeacherCard":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(path.read_text()).items() if k in known})


def teachers_dir() -> Path:
    return cache_dir() / "teachers"


def teacher_path(dataset: str, arch: str, seed: int, smoke: bool = False) -> Path:
    """Where `teacher train` caches a teacher (smoke teachers apart, so no real run ever uses one)."""
    return teachers_dir() / dataset / f"{arch}-seed{seed}{'-smoke' if smoke else ''}.pt"


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _card_path(path: Path) -> Path:
    return path.with_suffix(".json")


def list_teachers() -> list[TeacherCard]:
    """Every cached teacher card, newest first."""
    cards = []
    for card_file in sorted(teachers_dir().glob("*/*.json")):
        try:
            cards.append(TeacherCard.read(card_file))
        except (ValueError, TypeError, OSError):
            continue
    return sorted(cards, key=lambda c: c.created_at, reverse=True)


def find_cached(spec: DatasetSpec, arch: str, smoke: bool = False) -> TeacherCard | None:
    """The newest cached teacher of `arch` for the dataset; smoke teachers only for a smoke check,
    and then only when no real one exists."""
    cards = [c for c in list_teachers() if c.dataset == spec.name and c.arch == arch and Path(c.path).is_file()]
    real = [c for c in cards if not c.smoke]
    if real:
        return real[0]
    return next((c for c in cards if smoke), None)


def save_teacher(model: nn.Module, card: TeacherCard, path: Path) -> TeacherCard:
    """Write weights (with arch and class count inside) and the card; returns the card with sha256."""
    save_atomic({"arch": card.arch, "dataset": card.dataset, "num_classes": card.num_classes,
                 "state_dict": model.state_dict()}, path)
    card = replace(card, sha256=file_sha256(path), path=str(path))
    write_text_atomic(_card_path(path), json.dumps(asdict(card), indent=2))  # a kill never leaves half a card
    return card


def restricted_indices(spec: DatasetSpec, num_classes: int) -> list[int] | None:
    """Rows of a 1000-class ImageNet classifier that an ImageNet-subset dataset keeps (None: no restriction)."""
    if num_classes == spec.num_classes or num_classes != IMAGENET_CLASSES or not spec.wnids:
        return None
    return class_indices(spec.wnids, imagenet_wnids())


def restrict_classes(model: nn.Module, indices: list[int]) -> nn.Module:
    """Keep only the classifier rows of `indices`, so teacher, generator labels and evaluation all
    use the subset's classes (and CAMs read the right weights)."""
    old = model.classifier
    new = nn.Linear(old.in_features, len(indices), bias=old.bias is not None).to(old.weight.device)
    with torch.no_grad():
        new.weight.copy_(old.weight[indices])
        if old.bias is not None:
            new.bias.copy_(old.bias[indices])
    replace_classifier(model, new)
    return model


def _classifier_rows(state: dict[str, torch.Tensor], model: nn.Module) -> int | None:
    """Class count of a state dict, read at the key of the model's classifier weight."""
    name = next(n for n, m in model.named_modules() if m is model.classifier)
    weight = state.get(f"{name}.weight")
    return int(weight.shape[0]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def build_from_state(state: dict[str, torch.Tensor], spec: DatasetSpec, arch: str, origin: str,
                     arch_flag: str = "--arch") -> tuple[nn.Module, int | None]:
    """Load a state dict strictly into `arch`; a 1000-class ImageNet one is restricted to an ImageNet
    subset's classes. Returns the model and the class count it was restricted from (or None).
    `arch_flag` is the option that chose `arch` in the command at hand (`run`: --teacher)."""
    probe = create_model(arch, spec.num_classes, spec.in_chans)
    rows = _classifier_rows(state, probe)
    indices = restricted_indices(spec, rows) if rows is not None else None
    if rows is not None and rows != spec.num_classes and indices is None:
        raise UserError(f"{origin} has {rows} classes but {spec.name} has {spec.num_classes}"
                        f"{'' if not spec.wnids else ' (a 1000-class ImageNet teacher is restricted automatically)'}")
    model = create_model(arch, rows, spec.in_chans) if indices is not None else probe
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if "size mismatch" in line]
        raise UserError(f"{origin} does not fit {arch}: {len(lines)} tensors differ in shape, e.g. "
                        f"{(lines[0] if lines else str(exc))[:160]}") from None
    if result.missing_keys or result.unexpected_keys:
        detail = "; ".join(part for part in (
            f"{len(result.missing_keys)} missing keys (e.g. {result.missing_keys[0]})" if result.missing_keys else "",
            f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]})"
            if result.unexpected_keys else "") if part)
        raise UserError(f"{origin} does not fit {arch}: {detail}; pass the {arch_flag} it was trained as "
                        f"(`dfkd-bench models` lists them)")
    if indices is not None:
        restrict_classes(model, indices)
    return model, rows if indices is not None else None


def load_cached_teacher(card: TeacherCard, spec: DatasetSpec, device: torch.device) -> nn.Module:
    """Load a cached teacher after checking its file against the card's sha256."""
    path = Path(card.path)
    if not path.is_file():
        raise UserError(f"teacher weights {path} named by its card are missing; retrain or re-import it")
    if card.sha256 and file_sha256(path) != card.sha256:
        raise UserError(f"teacher {path} does not match its card (sha256 differs): the weights were changed or "
                        f"damaged; retrain or re-import it")
    state = read_state_dict(path)
    model, _ = build_from_state(state, spec, card.arch, f"teacher {path}")
    return _freeze(model.to(device))


def measure(model: nn.Module, spec: DatasetSpec, source: DataSource | None, device: torch.device,
            smoke: bool = False) -> tuple[float | None, int]:
    """Test accuracy (percent) and the number of test images it was measured on; (None, 0) without data."""
    if source is None:
        return None, 0
    split = source.test_split(limit=SMOKE_TEST_IMAGES if smoke else None)
    return accuracy(model, split, Normalize(spec.mean, spec.std).to(device)), len(split)


def check_checkpoint(file: str | Path, spec: DatasetSpec, arch: str,
                     arch_flag: str = "--arch") -> tuple[nn.Module, int | None]:
    """The checkpoint loaded strictly into `arch` on the CPU (see `build_from_state`): a file that does
    not fit is refused before any data is read."""
    MODELS.get(arch)
    return build_from_state(read_state_dict(Path(file)), spec, arch, f"checkpoint {file}", arch_flag)


def import_teacher(file: str | Path, spec: DatasetSpec, arch: str, device: torch.device,
                   source: DataSource | None, smoke: bool = False,
                   arch_flag: str = "--arch") -> tuple[nn.Module, TeacherCard]:
    """Take a checkpoint from elsewhere (.pt/.pth/.safetensors; wrappers and prefixes handled), verify it
    loads strictly into `arch`, measure it when the test split is there, and cache it with a card."""
    file = Path(file)
    model, restricted = check_checkpoint(file, spec, arch, arch_flag)
    model = model.to(device)
    acc, count = measure(model, spec, source, device, smoke)
    sha = file_sha256(file)
    card = TeacherCard(spec.name, arch, spec.num_classes, acc, {}, -1, "", 0.0, "", source=f"imported:{file.resolve()}",
                       source_sha256=sha, restricted_from=restricted, test_images=count, smoke=smoke)
    card = save_teacher(model, card, teachers_dir() / spec.name / f"{arch}-import-{sha[:12]}.pt")
    return _freeze(model), card


def torchvision_weights(arch: str, weights: str, arch_flag: str = "--arch") -> Any:
    """The torchvision weights entry `weights` of `arch`, judged from the names alone (nothing is
    downloaded); `arch_flag` is the option that chose `arch` in the command at hand (`run`: --teacher)."""
    tv_name = model_info(arch).torchvision_name
    if tv_name is None:
        choices = ", ".join(n for n in MODELS.names() if model_info(n).torchvision_name)
        raise UserError(f"--teacher-weights needs a torchvision architecture; choose {arch_flag} from: {choices}")
    import torchvision

    enum = torchvision.models.get_model_weights(tv_name)
    if weights not in enum.__members__:
        raise UserError(f"--teacher-weights {weights!r} is not a {tv_name} weight set; choose from: "
                        f"{', '.join(enum.__members__)}")
    return enum[weights]


def torchvision_state(arch: str, weights: str, dataset: str = "DATASET",
                      arch_flag: str = "--arch") -> tuple[dict[str, torch.Tensor], str]:
    """A torchvision weights enum's state dict (downloaded once to torch's hub cache) and its name."""
    entry = torchvision_weights(arch, weights, arch_flag)
    tv_name = model_info(arch).torchvision_name
    try:
        state = entry.get_state_dict(progress=False)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"could not download {tv_name} {weights} from {entry.url} ({type(exc).__name__}; no "
                        f"network?); fetch that file elsewhere and run: dfkd-bench teacher import FILE --dataset "
                        f"{dataset} --arch {arch}") from None
    return state, f"torchvision:{tv_name}.{weights}"


def torchvision_teacher(spec: DatasetSpec, arch: str, weights: str, device: torch.device,
                        source: DataSource | None, smoke: bool = False,
                        arch_flag: str = "--arch") -> tuple[nn.Module, TeacherCard]:
    """An ImageNet teacher from torchvision's weights API, restricted to a subset's classes, cached."""
    path = teachers_dir() / spec.name / f"{arch}-{weights}.pt"
    if path.is_file() and _card_path(path).is_file():
        card = TeacherCard.read(_card_path(path))
        return load_cached_teacher(card, spec, device), card
    state, origin = torchvision_state(arch, weights, spec.name, arch_flag)
    model, restricted = build_from_state(state, spec, arch, origin, arch_flag)
    model = model.to(device)
    acc, count = measure(model, spec, source, device, smoke)
    card = TeacherCard(spec.name, arch, spec.num_classes, acc, {}, -1, "", 0.0, "", source=origin,
                       restricted_from=restricted, test_images=count, smoke=smoke)
    return _freeze(model), save_teacher(model, card, path)


def trained_teacher(spec: DatasetSpec, arch: str, source: DataSource, device: torch.device, seed: int = 0,
                    recipe: TeacherRecipe | None = None, smoke: bool = False, on_step: StepHook | None = None,
                    on_epoch: EpochHook | None = None) -> tuple[nn.Module, TeacherCard]:
    """Train a teacher now, measure it on the test split, and cache it with its card."""
    recipe = recipe or recipe_for(spec, smoke)
    start = time.perf_counter()
    model = train_teacher(spec, arch, source, recipe, seed, device, on_step, on_epoch)
    seconds = time.perf_counter() - start
    acc, count = measure(model, spec, source, device, smoke)
    card = TeacherCard(spec.name, arch, spec.num_classes, acc, asdict(recipe), seed, "", seconds, "",
                       test_images=count, smoke=smoke)
    card = save_teacher(model, card, teacher_path(spec.name, arch, seed, smoke))
    return _freeze(model), card


def get_teacher(spec: DatasetSpec, arch: str | None, source: DataSource, device: torch.device, seed: int = 0,
                checkpoint: str | Path | None = None, weights: str | None = None,
                recipe: TeacherRecipe | None = None, smoke: bool = False,
                log: Callable[[str], None] | None = None) -> tuple[nn.Module, TeacherCard]:
    """A frozen teacher in eval mode and its card: from `checkpoint`, torchvision `weights`, the cache
    (the newest teacher of `arch` for this dataset), or trained now and cached. `arch` is what `run
    --teacher` chose, and refusals name that option."""
    arch = arch or spec.default_teacher
    MODELS.get(arch)
    if checkpoint is not None:
        return import_teacher(checkpoint, spec, arch, device, source, smoke, arch_flag=RUN_ARCH_FLAG)
    if weights is not None:
        return torchvision_teacher(spec, arch, weights, device, source, smoke, arch_flag=RUN_ARCH_FLAG)
    card = find_cached(spec, arch, smoke)
    if card is not None:
        return load_cached_teacher(card, spec, device), card
    recipe = recipe or recipe_for(spec, smoke)
    if log:
        log(f"no cached {arch} teacher for {spec.name}: training one ({recipe.epochs} epochs, seed {seed}"
            f"{', smoke' if smoke else ''}); `dfkd-bench teacher import` or --teacher-weights use an existing one")

    def report(epoch: int, epochs: int, loss: float) -> None:
        if log and (epoch % 5 == 0 or epoch == epochs):
            log(f"  teacher epoch {epoch}/{epochs}: train loss {loss:.4f}")

    return trained_teacher(spec, arch, source, device, seed, recipe, smoke, on_epoch=report)


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model
