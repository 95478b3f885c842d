"""Calibration of the fitted laws' 95% intervals: coverage of the planted b (or alpha) over simulated sweeps.

Each sweep plants gamma = a * T**b with random a and b, asymmetric loss bowls, noise and an lr grid of
random spacing (sqrt(2) to 2) and offset (see analysis/calibration.py), then fits it as `analyze` does.
Targets: the 95% interval of b holds the planted b in 90-98% of sweeps; the median error of gamma at
the largest T is within 5%. With --law alpha each sweep also plants lr_opt ~ B**alpha (alpha uniform in
[0.3, 1], 4 batch sizes) and the target is the coverage of alpha's 95% interval, 90-98%. With --law main-job
one planted law (b = -0.21, bowls 3x steeper above lr_opt) is fitted on the main job's own grid
(sweeps/specs/cpu-quick.yaml) with new noise each time: coverage of b, and each budget's lr_opt error. With
--law main-jobs-by-noise the same law, at noise from half to 4x its own, on the CPU and the GPU main job's
grids (sweeps/specs/gpu-quick.yaml, lr_opt placed mid-grid): the width of b's interval each would give.
Run: .venv/bin/python benchmarks/calibration.py [--law gamma|alpha|main-job|main-jobs-by-noise] [--sweeps 200]
     [--bootstrap 1000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

# runs from a checkout without `pip install -e .`
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from powersweep.analysis.calibration import (  # noqa: E402
    CPU_MAIN_JOB,
    GPU_MAIN_JOB,
    MAIN_JOB_LAW,
    calibrate,
    calibrate_alpha,
    calibrate_main_job,
)


def gamma_report(sweeps: int, n_boot: int) -> None:
    result = calibrate(sweeps, n_boot=n_boot)
    sweeps = result.sweeps
    bias = (sweeps["b_fit"] - sweeps["b"]).median()
    print(f"sweeps: {len(sweeps)}, bootstrap: {n_boot}, cells per sweep: {int(sweeps['n_cells'].median())}")
    print(f"coverage of b's 95% interval:            {result.coverage_b:.3f} (target 0.90-0.98)")
    print(f"coverage of gamma(T_max)'s 95% interval: {result.coverage_gamma:.3f}")
    print(f"median |gamma(T_max) / planted - 1|:     {result.median_gamma_error:.4f} (target < 0.05)")
    print(f"median b - planted b:                    {bias:+.4f}")
    print(f"median width of b's interval:            {result.median_b_width:.4f}")


def alpha_report(sweeps: int, n_boot: int) -> None:
    result = calibrate_alpha(sweeps, n_boot=n_boot)
    sweeps = result.sweeps
    bias = (sweeps["alpha_fit"] - sweeps["alpha"]).median()
    print(f"sweeps: {len(sweeps)}, bootstrap: {n_boot}, cells per sweep: {int(sweeps['n_cells'].median())}")
    print(f"coverage of alpha's 95% interval:              {result.coverage_alpha:.3f} (target 0.90-0.98)")
    print(f"the same, cells resampled (no per-cell draws): {result.coverage_resampled:.3f}")
    print(f"median |alpha - planted alpha|:                {result.median_alpha_error:.4f}")
    print(f"median alpha - planted alpha:                  {bias:+.4f}")
    print(f"median width of alpha's interval:              {result.median_alpha_width:.4f}")


def main_job_report(sweeps: int, n_boot: int) -> None:
    result = calibrate_main_job(sweeps, n_boot=n_boot)
    print(f"sweeps: {len(result.sweeps)}, bootstrap: {n_boot}, planted b: {MAIN_JOB_LAW.b}")
    print(f"coverage of b's 95% interval: {result.coverage_b:.3f} (target 0.90-0.98)")
    print(f"median b:                     {result.median_b:+.4f}")
    print(f"median width of b's interval: {result.median_b_width:.4f}")
    print("per budget: mean and sd of ln(lr_opt / planted), rms of error / standard error")
    print(result.cells.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def main_jobs_by_noise(sweeps: int, n_boot: int) -> None:
    """b's interval on each main job's grid, at loss noise from half to 4x the planted law's."""
    print(f"sweeps: {sweeps} per row, bootstrap: {n_boot}; planted b {MAIN_JOB_LAW.b} and the bowls of the")
    print("CPU main job's law, at each row's noise")
    print("| grid | noise sd (nats) | median width of b's 95% CI | 90th percentile | coverage of b |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for job in (CPU_MAIN_JOB, GPU_MAIN_JOB):
        for factor in (0.5, 1, 2, 4):
            law = replace(job.law, noise_sd=job.law.noise_sd * factor)
            result = calibrate_main_job(sweeps, job=job, law=law, n_boot=n_boot)
            widths = result.sweeps["b_high"] - result.sweeps["b_low"]
            print(
                f"| {job.spec} | {law.noise_sd:g} | {result.median_b_width:.3f} | "
                f"{widths.quantile(0.9):.3f} | {result.coverage_b:.2f} |"
            )


REPORTS = {
    "gamma": gamma_report,
    "alpha": alpha_report,
    "main-job": main_job_report,
    "main-jobs-by-noise": main_jobs_by_noise,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--law", choices=tuple(REPORTS), default="gamma")
    parser.add_argument("--sweeps", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args()
    start = time.perf_counter()
    REPORTS[args.law](args.sweeps, args.bootstrap)
    print(f"wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
