"""Benchmark options: `--device` picks where the hot paths run (default: cuda if available).

Every run that times at least one benchmark also writes benchmarks/results/<UTC time>-<device>.json:
each benchmark's name, mean and standard deviation in seconds, rounds and extra_info, with the device's
name and the torch version, so figures from different machines can be compared later.
"""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch

RESULTS = Path(__file__).resolve().parent / "results"
_RECORDS = pytest.StashKey[list[dict[str, Any]]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--device", default="auto", help="auto, cpu or cuda")


def _device(config: pytest.Config) -> torch.device:
    name = config.getoption("--device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


@pytest.fixture(scope="session")
def device(request: pytest.FixtureRequest) -> torch.device:
    return _device(request.config)


@pytest.fixture(autouse=True)
def _record_benchmark(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a test that timed a benchmark, keep its figures for the session's results file."""
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None
    yield
    if bench is not None and bench.stats is not None:
        stats = bench.stats.stats
        request.config.stash.setdefault(_RECORDS, []).append(
            {"name": bench.name, "test": bench.fullname, "mean_s": stats.mean, "std_s": stats.stddev,
             "min_s": stats.min, "rounds": stats.rounds, "extra_info": dict(bench.extra_info)})


def _device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model name (Linux), else what `platform` knows."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
    return model or platform.processor() or platform.machine()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Write the session's benchmark figures, if any were timed, to benchmarks/results/."""
    records = session.config.stash.get(_RECORDS, [])
    if not records:
        return
    device = _device(session.config)
    now = datetime.now(timezone.utc)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{now.strftime('%Y%m%dT%H%M%SZ')}-{device.type}.json"
    path.write_text(json.dumps({"time_utc": now.isoformat(timespec="seconds"), "device": device.type,
                                "device_name": _device_name(device), "torch": torch.__version__,
                                "threads": torch.get_num_threads(), "benchmarks": records}, indent=1,
                               default=str) + "\n")
