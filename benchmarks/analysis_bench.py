"""Analysis speed: a 100,000-row synthetic sweep, 1,000 bootstrap resamples, median of repeated timings.

Times reading and validating a Parquet file (load_table), the full analysis (per-cell lr_opt, gamma fits per
model and pooled, critical batch size, sensitivity, band fit, (a, b) search, all with their CIs) and,
separately, the report (figures as PNG and SVG, index.html, coefficients.json). Budget: analysis under 10 s.
Run: .venv/bin/python benchmarks/analysis_bench.py [--repeats 3] [--bootstrap 1000] [--no-plots]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

# runs from a checkout without `pip install -e .`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.analysis import (  # noqa: E402
    PlantedLaw,
    SweepGrid,
    analyze,
    load_table,
    synthetic_table,
    write_report,
)
from powersweep.analysis.synthetic import synthetic_power_table  # noqa: E402

BUDGET_S = 10.0
COMMAND = "python benchmarks/analysis_bench.py"


def bench_table() -> pd.DataFrame:
    """96,000 WSD runs (4 models x 10 T x 8 B x 12 lr x 25 seeds) and 4,000 power runs: 100,000 rows."""
    grid = SweepGrid(
        models=(("12M", 12e6), ("36M", 36e6), ("121M", 121e6), ("350M", 350e6)),
        tokens=tuple(np.geomspace(2e9, 256e9, 10).tolist()),
        batch_sizes=tuple(2**k for k in range(4, 12)),
        lrs=tuple(np.geomspace(1e-4, 0.1, 12).tolist()),
        n_seeds=25,
    )
    wsd = synthetic_table(PlantedLaw(a=4.6, b=-0.51), grid, seed=0)
    power = synthetic_power_table(
        tokens=(8e9, 16e9, 32e9, 64e9), batch_sizes=(32, 64, 128, 256), n_seeds=10, seed=1
    )
    return pd.concat([wsd, power], ignore_index=True)


def timed(step, repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``repeats`` calls, and the last result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--no-plots", action="store_true", help="skip timing the report with its figures")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.parquet"
        bench_table().to_parquet(path, index=False)
        load_s, table = timed(lambda: load_table(path), args.repeats)
    analyze_s, result = timed(lambda: analyze(table, n_boot=args.bootstrap, seed=0), args.repeats)
    rows = [
        ("load_table (Parquet file, validation)", load_s, args.repeats),
        ("analyze (cells, fits, CIs)", analyze_s, args.repeats),
    ]
    if not args.no_plots:
        with tempfile.TemporaryDirectory() as out:
            report_s, paths = timed(lambda: write_report(table, out, result=result), 1)
        rows.append((f"write_report ({len(paths.figures)} figures PNG+SVG, html, json)", report_s, 1))
    print_results(rows, table, result, args)
    return 0 if load_s + analyze_s < BUDGET_S else 1


def print_results(rows, table: pd.DataFrame, result, args) -> None:
    fit = result.gamma.pooled
    flags = f"--repeats {args.repeats} --bootstrap {args.bootstrap}" + (
        " --no-plots" if args.no_plots else ""
    )
    print(f"Command: `{COMMAND} {flags}`")
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"numpy {np.__version__}, pandas {pd.__version__}"
    )
    print(
        f"Table: {len(table):,} rows, {len(result.cells)} cells, {args.bootstrap} bootstrap resamples; "
        f"fitted a = {fit.a:.3f} [{fit.a_ci.low:.3f}, {fit.a_ci.high:.3f}], b = {fit.b:.4f} "
        f"[{fit.b_ci.low:.4f}, {fit.b_ci.high:.4f}] (planted 4.6, -0.51)\n"
    )
    print("| step | median wall time (s) | repeats |")
    print("| --- | ---: | ---: |")
    for name, seconds, repeats in rows:
        print(f"| {name} | {seconds:.2f} | {repeats} |")
    total = rows[0][1] + rows[1][1]
    print(f"| **load + analyze** (budget {BUDGET_S:g} s) | **{total:.2f}** | |")


if __name__ == "__main__":
    sys.exit(main())
