"""The package face is light and lazy: importing it (or the report) loads no torch; every public name
still resolves, and the version comes from the installed package's metadata."""

from __future__ import annotations

import subprocess
import sys
from importlib import metadata

import pytest

import dfkd_bench


@pytest.mark.parametrize("modules", ["dfkd_bench", "dfkd_bench.report", "dfkd_bench.report.plots"])
def test_importing_the_face_or_the_report_loads_no_torch(modules: str) -> None:
    code = f"import sys, {modules}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_every_public_name_resolves() -> None:
    for name in dfkd_bench.__all__:
        assert getattr(dfkd_bench, name) is not None
    assert set(dfkd_bench.__all__) <= set(dir(dfkd_bench))
    with pytest.raises(AttributeError):
        dfkd_bench.no_such_name  # noqa: B018


def test_the_version_is_the_installed_package_metadata() -> None:
    assert dfkd_bench.__version__ == metadata.version("dfkd-bench")
