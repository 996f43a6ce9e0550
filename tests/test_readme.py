"""The README's promises: its example method is the tested plugin file, and CI runs its test command."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_method_is_the_tested_plugin() -> None:
    readme = (ROOT / "README.md").read_text()
    plugin = (ROOT / "tests" / "example_plugin.py").read_text().rstrip()
    assert f"```python\n{plugin}\n```" in readme


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    test_command = next(line for line in ci_lines if "pytest" in line)
    assert test_command in readme
