"""scikit-learn's handwritten digits: real data shipped with scikit-learn, the suite's default."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .spec import DATASETS, DatasetSpec, RealData

SPLIT_SEED = 0
TEST_FRACTION = 0.2
INPUT_SIZE = 32


@lru_cache(maxsize=1)
def _load_digits_tensors() -> RealData:
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
    return RealData(x[tr], y[tr], x[te], y[te])


def _loader(spec: DatasetSpec, data_root: Path | None) -> RealData:
    data = _load_digits_tensors()
    return RealData(data.train_x.clone(), data.train_y.clone(), data.test_x.clone(), data.test_y.clone())


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
    loader=_loader,
)
DATASETS.add("digits", DIGITS, DIGITS.description)
