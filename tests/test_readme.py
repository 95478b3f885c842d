"""The documentation names every column of the results table (docs/reference/results-table.md), and the README
holds the two quick-start commands."""

from pathlib import Path

from powersweep.sweeps.schema import SCHEMA

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
COLUMNS_PAGE = (ROOT / "docs" / "reference" / "results-table.md").read_text()


def test_every_result_column_is_documented():
    missing = [name for name in SCHEMA.names if f"`{name}`" not in COLUMNS_PAGE]
    assert not missing


def test_quick_start_commands_are_the_ci_ones():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make demo" in README and "make test" in README and "make test" in ci
