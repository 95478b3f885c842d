# PYTHON_ARGCOMPLETE_OK: shell completion (docs/guide/sweeps.md, "Command line") may call this script
"""The `powersweep` command line: parsing and dispatching only. User mistakes print one line on stderr and
exit with code 2.

One module per command family, each registering its parsers and handlers over the library it calls:
`sweep_commands` (presets, train-one, demo, plan, submit, resume, status: sweeps and proxy_models),
`cluster_commands` (logs, stop and the Jobs API paths of submit, resume and status: cluster),
`analysis_commands` (analyze, predict: analysis) and `data_commands` (data prepare, data inspect:
proxy_models.prepared); `options` holds what they share (sizes such as 16M, RAY_ADDRESS, `--json`,
`--version`). Torch, Ray, pandas and the analysis stack are imported inside the handlers that use them, so
`--help` and the parsing of any command stay fast; argcomplete only when the shell asks for completions.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from powersweep.cli import cluster_commands, options, sweep_commands
from powersweep.sweeps.interrupt import SweepInterrupted

DESCRIPTION = "The `powersweep` command line. User mistakes print one line on stderr and exit with code 2."
# Subcommands whose parser module is imported only when that subcommand runs: name -> (module, function adding
# its parser, the help line `powersweep --help` shows).
DEFERRED = {
    "analyze": (
        "powersweep.cli.analysis_commands",
        "add_analyze_parser",
        "fit the learning-rate law of a sweep and write a report",
    ),
    "predict": (
        "powersweep.cli.analysis_commands",
        "add_predict_parser",
        "predict the optimal peak lr from coefficients.json",
    ),
    "data": (
        "powersweep.cli.data_commands",
        "add_data_parser",
        "prepare a text dataset as token shards, or inspect a prepared corpus",
    ),
}

__all__ = ["build_parser", "is_user_error", "main"]


def main(argv: list[str] | None = None) -> int:
    """Run `powersweep ARGV`; returns the exit code (2 for a user mistake, after one line on stderr; 130 or
    143 for a sweep ended by SIGINT or SIGTERM, after one line naming the command that finishes it)."""
    if argv is None and (words := options.completion_words()) is not None:
        options.autocomplete(build_parser(words))  # the shell's tab: answers and exits
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, not at exit, so that a closed pipe is seen below
        return code
    except BrokenPipeError:
        return _reader_gone()
    except SweepInterrupted as stop:  # its line is printed: see sweeps/interrupt.py
        return stop.exit_code
    except Exception as err:
        if not is_user_error(err):
            raise
        from powersweep.sweeps.outcome import error_line

        print(error_line(f"powersweep {args.command}", err), file=sys.stderr)
        return 2


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser; a DEFERRED subcommand gets its full parser only when `argv` names it."""
    parser = argparse.ArgumentParser(prog="powersweep", description=DESCRIPTION)
    parser.add_argument("--version", action=options.VersionAction, help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep_commands.add_parsers(sub)
    cluster_commands.add_parsers(sub)
    command = next((a for a in argv or () if not a.startswith("-")), None)
    for name, (module, adder, help_line) in DEFERRED.items():
        if name == command:
            getattr(importlib.import_module(module), adder)(sub)
        else:
            sub.add_parser(name, help=help_line, add_help=False)
    return parser


def is_user_error(error: BaseException) -> bool:
    """A mistake the user can fix: an error of the libraries' USER_ERRORS, or a cluster submission refused."""
    from powersweep.cluster.jobs import ClusterError
    from powersweep.sweeps.outcome import is_user_error as is_library_user_error

    return isinstance(error, ClusterError) or is_library_user_error(error)


def _reader_gone() -> int:
    """The reader of stdout closed it (`powersweep status DIR | head -1`): stop quietly, as a shell tool does.

    Python would otherwise print a BrokenPipeError when it flushes stdout at exit; pointing stdout at
    /dev/null leaves nothing to flush (the recipe of Python's own documentation, "Note on SIGPIPE").
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 1
