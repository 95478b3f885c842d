"""The README documents every column of the results table and holds the two quick-start commands."""

from pathlib import Path

from powersweep.sweeps.schema import SCHEMA

README = (Path(__file__).parent.parent / "README.md").read_text()


def test_every_result_column_is_documented():
    missing = [name for name in SCHEMA.names if f"`{name}`" not in README]
    assert not missing


def test_quick_start_commands_are_the_ci_ones():
    ci = (Path(__file__).parent.parent / ".ci" / "run").read_text()
    assert "make demo" in README and "make test" in README and "make test" in ci
