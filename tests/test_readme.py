"""The README's promises: its example method is the tested plugin file, and CI runs its test command."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["example_plugin.py", "example_generator_plugin.py"])
def test_readme_example_methods_are_the_tested_plugins(name: str) -> None:
    readme = (ROOT / "README.md").read_text()
    plugin = (ROOT / "tests" / name).read_text().rstrip()
    assert f"```python\n{plugin}\n```" in readme


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert test_command in readme
