"""Datasets: specs (classes, sizes, normalisation), readers of the real on-disk formats, test-split caches."""

from . import cifar, digits, imagenet  # noqa: F401  (register the datasets)
from .source import DataSource, DataWarning, cache_dir
from .spec import DATA_ENV, DATASETS, DatasetSpec, get_dataset
from .split import EvalSplit

__all__ = ["DATASETS", "DATA_ENV", "DataSource", "DataWarning", "DatasetSpec", "EvalSplit", "cache_dir",
           "get_dataset"]
