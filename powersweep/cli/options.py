"""Conventions every `powersweep` command shares, as Ray's and Optuna's command lines have them: `--version`,
sizes written as 16M or 2B, the cluster address from RAY_ADDRESS, and `--json` for one JSON document on
stdout.

Only argparse, math and os at import time: `--help` stays fast.

>>> p.add_argument("--tokens", type=token_count, help="training tokens, e.g. 2e6 or 2M")
>>> address = cluster_address(args.address)   # --address, else $RAY_ADDRESS, else None
"""

from __future__ import annotations

import argparse
import math
import os

ADDRESS_ENV = "RAY_ADDRESS"  # Ray's own variable: `ray job submit` and ray.init() read it too


class VersionAction(argparse.Action):
    """`--version`: print `powersweep <version>` and exit; the installed version is looked up only then."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        from importlib.metadata import version

        print(f"{parser.prog} {version('powersweep')}")
        parser.exit()


def token_count(value: str) -> float:
    """A token count as argparse's `type`: 2e6, 500K, 16M, 2B or 1T (the spec's own parser); a bad value is
    argparse's one-line error naming the option."""
    from powersweep.proxy_models.settings import parse_tokens

    try:
        return parse_tokens(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def whole_count(value: str) -> int:
    """A whole number of tokens (ids), written as for `token_count`: 64, 4K, 100M."""
    count = token_count(value)
    if not count.is_integer():
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number of tokens: write e.g. 64 or 4K")
    return int(count)


def parameter_count(value: str) -> float:
    """A number of parameters, written as for `token_count`: 5e7, 50M or 1.5B."""
    try:
        return token_count(value)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a number of parameters: write e.g. 5e7, 50M or 1.5B"
        ) from None


def add_json_option(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    """`--json`: the command prints `what` as one JSON document on stdout, and nothing else there."""
    parser.add_argument("--json", action="store_true", help=f"print {what} as one JSON document")


def print_json(document) -> None:
    """`document` as one JSON document on stdout: NaN and infinities (no JSON number) become null."""
    import json

    print(json.dumps(_finite(document), indent=2, default=str))


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def address_help(what: str) -> str:
    """The help line of an `--address` option, naming its default."""
    return f"{what} (default: ${ADDRESS_ENV} when set)"


def cluster_address(given: str | None) -> str | None:
    """The cluster address a command uses: `--address` when given, else RAY_ADDRESS, else None."""
    return given or os.environ.get(ADDRESS_ENV) or None


def required_address(given: str | None) -> str:
    """As `cluster_address`, for a command that cannot run without one: a ClusterError (one line, exit 2)
    saying how to give it."""
    address = cluster_address(given)
    if address is None:
        from powersweep.cluster.jobs import ClusterError

        raise ClusterError(
            f"no cluster address: give --address http://HEAD:8265 (the cluster's Jobs API) "
            f"or set {ADDRESS_ENV}"
        )
    return address


def completion_words() -> list[str] | None:
    """The words before the cursor of the command line being completed (argcomplete sets COMP_LINE and
    COMP_POINT), the program's name left out; None when no completion was asked for."""
    if "_ARGCOMPLETE" not in os.environ:
        return None
    line = os.environ.get("COMP_LINE", "")
    point = int(os.environ.get("COMP_POINT", len(line)))
    return line[:point].split()[1:]


def autocomplete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request and exit, when there is one (argcomplete is imported only
    then, so that every other run stays as fast as it was)."""
    if "_ARGCOMPLETE" in os.environ:
        import argcomplete

        argcomplete.autocomplete(parser)  # writes the completions and exits the process
