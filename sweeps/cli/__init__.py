"""The `powersweep` command line: parsing and dispatching only, over the sweeps, analysis and cluster libraries."""

from sweeps.cli.sweep_commands import main

__all__ = ["main"]
