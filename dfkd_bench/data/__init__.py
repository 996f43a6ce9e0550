"""Datasets: specs (classes, sizes, normalisation) and loaders of the real splits."""

from . import digits  # noqa: F401  (registers the dataset)
from .spec import DATASETS, DatasetSpec, RealData, get_dataset

__all__ = ["DATASETS", "DatasetSpec", "RealData", "get_dataset"]
