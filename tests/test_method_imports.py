"""The method API is closed: method files (methods/, the example plugins, the README's examples) import
from the package only through `dfkd_bench.api` (or build on another method), never the runner or the CLI."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = re.compile(r"^dfkd_bench\.(api|methods\.\w+)$")


def method_sources() -> dict[str, str]:
    """Every method file's source: methods/*.py, the example plugins and the README's python blocks."""
    sources = {str(p.relative_to(ROOT)): p.read_text() for p in sorted((ROOT / "methods").glob("*.py"))}
    for name in ("example_plugin.py", "example_generator_plugin.py"):
        sources[f"tests/{name}"] = (ROOT / "tests" / name).read_text()
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    sources.update({f"README.md block {i}": block for i, block in enumerate(blocks)})
    return sources


def package_imports(source: str) -> list[str]:
    """The dfkd_bench modules a source imports (absolute imports only; methods use no relative ones)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dfkd_bench":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "dfkd_bench"]
    return found


@pytest.mark.parametrize("name", sorted(method_sources()))
def test_method_files_import_only_the_public_api(name: str) -> None:
    bad = [m for m in package_imports(method_sources()[name]) if not ALLOWED.match(m)]
    assert not bad, f"{name} imports {bad}; import from dfkd_bench.api"


def test_the_check_catches_an_import_of_the_runner() -> None:
    source = "from dfkd_bench.api import Method\nfrom dfkd_bench.runner import run\nimport dfkd_bench.cli\n"
    assert [m for m in package_imports(source) if not ALLOWED.match(m)] == ["dfkd_bench.runner", "dfkd_bench.cli"]


def test_the_api_exports_every_name_it_lists() -> None:
    import dfkd_bench.api as api

    assert all(hasattr(api, name) for name in api.__all__)
    assert {"Method", "GeneratorMethod", "register_method", "UserError", "MethodHparams"} <= set(api.__all__)
