"""Wall time of `powersweep --help` (python -m powersweep.cli --help), for this checkout and others.

A checkout from before the one import name runs its command line as `python -m sweeps.cli`.

Each round runs every checkout once, in turn, so a busy machine slows them alike; prints the median per
checkout and, with two or more, the ratio to the first.

    python benchmarks/cli_startup.py [--rounds 7] [OTHER_CHECKOUT ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def help_seconds(checkout: str) -> float:
    env = {**os.environ, "PYTHONPATH": checkout}
    cli = "powersweep.cli" if os.path.isdir(os.path.join(checkout, "powersweep", "cli")) else "sweeps.cli"
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", cli, "--help"],
        env=env,
        cwd=checkout,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("others", nargs="*", help="other checkouts of the project to time the same way")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    checkouts = [ROOT, *map(os.path.abspath, args.others)]
    times: dict[str, list[float]] = {c: [] for c in checkouts}
    for _ in range(args.rounds):
        for checkout in checkouts:
            times[checkout].append(help_seconds(checkout))
    first = statistics.median(times[ROOT])
    for checkout, seconds in times.items():
        median = statistics.median(seconds)
        print(
            f"{checkout}: median {median:.2f} s over {len(seconds)} runs (min {min(seconds):.2f}, "
            f"max {max(seconds):.2f}); {median / first:.2f}x this checkout"
        )


if __name__ == "__main__":
    main()
