"""scikit-learn's handwritten digits: real data shipped with scikit-learn, the suite's default."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from .source import DataSource
from .spec import DATASETS, DatasetSpec
from .split import EvalSplit

SPLIT_SEED = 0
TEST_FRACTION = 0.2
INPUT_SIZE = 32


@lru_cache(maxsize=1)
def _load_digits_tensors() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train_x, train_y, test_x, test_y): float [0,1] images at 32 px (a few MB, kept in memory)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = bunch.images.astype(np.float32) / 16.0  # 8x8, values 0..16
    labels = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(labels)), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels
    )
    x = torch.from_numpy(images).unsqueeze(1)
    x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False).clamp_(0, 1)
    x = x.expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(labels)
    tr, te = torch.from_numpy(idx_train), torch.from_numpy(idx_test)
    return x[tr], y[tr], x[te], y[te]


class DigitsSource(DataSource):
    """The whole dataset lives in memory as tensors; no data root is read."""

    def count_train(self) -> int:
        return int(_load_digits_tensors()[1].shape[0])

    def in_memory_train(self) -> tuple[torch.Tensor, torch.Tensor]:
        train_x, train_y, _, _ = _load_digits_tensors()
        return train_x.clone(), train_y.clone()

    def test_split(self, limit: int | None = None, progress=None) -> EvalSplit:
        _, _, test_x, test_y = _load_digits_tensors()
        count = len(test_y) if limit is None else min(limit, len(test_y))
        return EvalSplit(test_x[:count].clone(), test_y[:count].clone())


DIGITS = DatasetSpec(
    name="digits",
    num_classes=10,
    class_names=("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    input_size=INPUT_SIZE,
    in_chans=3,
    mean=(0.305, 0.305, 0.305),
    std=(0.324, 0.324, 0.324),
    train_size=1437,
    default_teacher="digits_resnet8",
    default_student="digits_resnet8_slim",
    hflip=False,
    description="scikit-learn handwritten digits (1797 real 8x8 images, 10 classes), 80/20 stratified split, "
    "upsampled to 32x32; shipped, no download",
    opener=DigitsSource,
)
DATASETS.add("digits", DIGITS, DIGITS.description)
