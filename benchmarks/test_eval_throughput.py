"""Evaluation throughput on an ImageNet-layout test split: decoding the JPEG folder, reading the uint8
cache, and a whole evaluation from the cache (images/s = images / mean).

Run: `.venv/bin/python -m pytest benchmarks/test_eval_throughput.py -n 0 --benchmark-enable [--device cuda]`.
The folder is synthetic (random-texture JPEGs at ImageNet's typical 500x375), so decoding cost is real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd_bench.data import get_dataset
from dfkd_bench.data.imagenet_classes import IMAGENETTE_WNIDS
from dfkd_bench.data.source import DataSource, loader_workers
from dfkd_bench.engine import Normalize
from dfkd_bench.engine.evaluate import accuracy
from dfkd_bench.engine.timing import synchronize
from dfkd_bench.models import create_model

PER_CLASS = 50  # 500 validation images


@pytest.fixture(scope="module")
def imagenette(tmp_path_factory: pytest.TempPathFactory) -> DataSource:
    """An Imagenette-layout folder of 500 JPEGs and its source, with a private cache."""
    root = tmp_path_factory.mktemp("imagenette")
    rng = np.random.default_rng(0)
    for wnid in IMAGENETTE_WNIDS:
        folder = root / "val" / wnid
        folder.mkdir(parents=True)
        for i in range(PER_CLASS):
            small = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)  # smooth texture: JPEG-typical size
            Image.fromarray(small).resize((500, 375), Image.BILINEAR).save(folder / f"{wnid}_{i}.JPEG", quality=90)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DFKD_BENCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        source = get_dataset("imagenette").open(root)
        source.test_split()  # build the cache once
        yield source


def _cache_files(source: DataSource) -> Path:
    return source.cache_folder(None)


def test_decode_jpeg_folder(benchmark, imagenette: DataSource) -> None:
    """Decode + resize 256 + centre crop 224 of every test JPEG through the DataLoader workers."""
    loader = torch.utils.data.DataLoader(imagenette.test_dataset(), batch_size=100, num_workers=loader_workers())
    benchmark.extra_info["images"] = len(loader.dataset)
    benchmark.pedantic(lambda: [None for _ in loader], rounds=3, iterations=1)


def test_read_uint8_cache(benchmark, imagenette: DataSource, device: torch.device) -> None:
    """Stream the cached uint8 split to the device as float batches (what every evaluation reads)."""
    split = imagenette.test_split()
    assert _cache_files(imagenette).is_dir()
    benchmark.extra_info["images"] = len(split)

    def read() -> None:
        for x, _ in split.batches(250, device):
            pass
        synchronize(device)

    benchmark.pedantic(read, rounds=5, iterations=1)


@pytest.mark.parametrize("arch", ["tv_resnet18"])
def test_evaluate_from_cache(benchmark, imagenette: DataSource, device: torch.device, arch: str) -> None:
    """A whole evaluation of a 10-class ImageNet model from the cache (bf16 autocast on CUDA)."""
    split = imagenette.test_split()
    spec = imagenette.spec
    model = create_model(arch, spec.num_classes).to(device).eval()
    norm = Normalize(spec.mean, spec.std).to(device)
    amp = torch.bfloat16 if device.type == "cuda" else None
    benchmark.extra_info["images"] = len(split)
    benchmark.pedantic(lambda: accuracy(model, split, norm, amp_dtype=amp), rounds=3, iterations=1)
