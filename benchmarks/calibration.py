"""Calibration of the gamma law's 95% intervals: coverage of the planted b over simulated sweeps.

Each sweep plants gamma = a * T**b with random a and b, asymmetric loss bowls, noise and an lr grid of
random spacing (sqrt(2) to 2) and offset (see analysis/calibration.py), then fits it as `analyze` does.
Targets: the 95% interval of b holds the planted b in 90-98% of sweeps; the median error of gamma at
the largest T is within 5%.
Run: .venv/bin/python benchmarks/calibration.py [--sweeps 200] [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install -e .`

from analysis.calibration import calibrate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    start = time.perf_counter()
    result = calibrate(args.sweeps, n_boot=args.bootstrap)
    seconds = time.perf_counter() - start
    sweeps = result.sweeps
    bias = (sweeps["b_fit"] - sweeps["b"]).median()
    print(f"sweeps: {len(sweeps)}, bootstrap: {args.bootstrap}, cells per sweep: {int(sweeps['n_cells'].median())}")
    print(f"coverage of b's 95% interval:            {result.coverage_b:.3f} (target 0.90-0.98)")
    print(f"coverage of gamma(T_max)'s 95% interval: {result.coverage_gamma:.3f}")
    print(f"median |gamma(T_max) / planted - 1|:     {result.median_gamma_error:.4f} (target < 0.05)")
    print(f"median b - planted b:                    {bias:+.4f}")
    print(f"median width of b's interval:            {result.median_b_width:.4f}")
    print(f"wall time: {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
