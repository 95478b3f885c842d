"""Do the fitted laws' intervals mean what they say? Coverage by simulation over planted sweeps.

Each simulated sweep draws a planted law gamma = a * T**b (a log-uniform in [2, 10], b uniform in
[-0.65, -0.35]), asymmetric loss bowls (2 to 4 times steeper above lr_opt), a noise level, and an lr
grid of random spacing (a factor sqrt(2) to 2) and random offset, then runs the per-cell estimator and
the pooled fit as ``analyze`` does. Over many sweeps a 95% interval of b should hold the planted b in
about 95% of them. ``calibrate_alpha`` does the same for the batch-size exponent of
lr_opt = c * B**alpha * T**beta (``analysis.batch_scaling``), with a planted alpha in [0.3, 1].

>>> summary = calibrate(n_sweeps=200, n_boot=1000)
>>> summary.coverage_b, summary.median_gamma_error
>>> calibrate_alpha(n_sweeps=200, n_boot=1000).coverage_alpha
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from powersweep.analysis.batch_scaling import fit_batch_law
from powersweep.analysis.fit import fit_gamma
from powersweep.analysis.optimum import find_optima
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table

TOKENS = (2e9, 8e9, 32e9, 128e9)
BATCH_SIZES = (32, 64, 128)
ALPHA_BATCH_SIZES = (32, 64, 128, 256)  # sequences: an exponent of B needs a few doublings
ALPHA_RANGE = (0.3, 1.0)  # planted alpha: real sweeps show 0.1-0.6, the paper assumes 1
# sweeps/specs/cpu-quick.yaml: 8 lrs sqrt(2) apart, 6 budgets (tokens), batch 4 of 64-token sequences
MAIN_JOB_LRS = (0.000177, 0.00025, 0.000354, 0.0005, 0.000707, 0.001, 0.00141, 0.002)
MAIN_JOB_TOKENS = (125e3, 250e3, 500e3, 1e6, 2e6, 4e6)
# lr_opt = 4 * a * T**b falls from 1.1e-3 to 5.5e-4 over the budgets, as the main job's measured optima do
MAIN_JOB_LAW = PlantedLaw(a=0.003335, b=-0.21, asymmetry=3.0, curvature=0.02, noise_sd=0.002)


@dataclass(frozen=True)
class MainJobGrid:
    """A main job's grid, as its spec in sweeps/specs/ sets it, and the law planted on it."""

    spec: str  # the spec's file name
    model: tuple[str, int]  # preset and parameters (the loss floor's only)
    lrs: tuple[float, ...]
    tokens: tuple[float, ...]
    batch_size: int  # sequences
    seq_len: int
    law: PlantedLaw


CPU_MAIN_JOB = MainJobGrid(
    "cpu-quick.yaml", ("cpu-xxs", 31904), MAIN_JOB_LRS, MAIN_JOB_TOKENS, 4, 64, MAIN_JOB_LAW
)
# sweeps/specs/gpu-quick.yaml: 8 lrs a factor 2 apart, 6 budgets sqrt(2) apart, batch 16 of 512 tokens. What
# its optima will be is not measured yet: the planted law puts lr_opt mid-grid (6e-3 at 5M tokens, falling to
# 4.2e-3 at 28M) with the CPU main job's b and bowls.
GPU_MAIN_JOB = MainJobGrid(
    "gpu-quick.yaml",
    ("paper-12m", 12_000_000),
    (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064),
    (5e6, 7e6, 10e6, 14e6, 20e6, 28e6),
    16,
    512,
    replace(MAIN_JOB_LAW, a=0.006 / 16 / 5e6**-0.21),
)


@dataclass(frozen=True)
class Calibration:
    """The outcome of ``calibrate``: one row per sweep in ``sweeps``, and the summaries."""

    sweeps: pd.DataFrame  # a, b, asymmetry, noise_sd, spacing, b_low, b_high, covered, gamma_error
    coverage_b: float  # share of sweeps whose 95% interval of b holds the planted b
    coverage_gamma: float  # the same for gamma at the largest T (the fit's pointwise band)
    median_gamma_error: float  # median |gamma(T_max) fitted / planted - 1|
    median_b_width: float  # median width of the b interval


def planted_sweep(
    seed: int,
    *,
    batch_sizes: tuple[int, ...] = BATCH_SIZES,
    alpha_range: tuple[float, float] | None = None,
) -> tuple[PlantedLaw, pd.DataFrame, float]:
    """A random planted law, its sweep's table and the grid spacing (ratio of neighbouring lrs).

    With ``alpha_range`` the law's batch exponent (lr_opt ~ B**alpha) is drawn uniformly from it; without,
    it is the paper's 1 and the draws are those of the gamma calibration's published numbers.
    """
    rng = np.random.default_rng(seed)
    law = PlantedLaw(
        a=float(np.exp(rng.uniform(np.log(2), np.log(10)))),
        b=float(rng.uniform(-0.65, -0.35)),
        asymmetry=float(rng.uniform(2.0, 4.0)),
        noise_sd=float(rng.uniform(0.001, 0.004)),
        curvature=float(rng.uniform(0.015, 0.04)),
    )
    spacing = float(rng.uniform(np.sqrt(2), 2.0))
    if alpha_range is not None:
        law = replace(law, batch_exp=float(rng.uniform(*alpha_range)))
    optima = law.lr_opt(np.array(batch_sizes)[:, None], np.array(TOKENS)[None, :])
    low, high = optima.min() / 12, optima.max() * 12  # the divergence above 8x lr_opt trims the top
    steps = np.arange(int(np.ceil(np.log(high / low) / np.log(spacing))) + 1)
    lrs = low * spacing ** (steps + rng.uniform(0.0, 1.0))  # the grid lands anywhere relative to lr_opt
    grid = SweepGrid(models=(("m", 36e6),), tokens=TOKENS, batch_sizes=batch_sizes, lrs=tuple(lrs.tolist()))
    return law, synthetic_table(law, grid, seed=seed), spacing


def one_sweep(seed: int, *, n_boot: int = 1000) -> dict:
    """Fit one planted sweep; the planted values, the fitted ones and whether the intervals hold them."""
    law, table, spacing = planted_sweep(seed)
    cells = find_optima(load_table(table), n_draws=n_boot, seed=seed)
    fit = fit_gamma(cells, n_boot=n_boot, seed=seed).pooled
    t_max = max(TOKENS)
    truth = law.a * t_max**law.b
    band = fit.band([t_max])
    return {
        "seed": seed,
        "a": law.a,
        "b": law.b,
        "asymmetry": law.asymmetry,
        "noise_sd": law.noise_sd,
        "spacing": spacing,
        "b_fit": fit.b,
        "b_low": fit.b_ci.low,
        "b_high": fit.b_ci.high,
        "covered": fit.b_ci.contains(law.b),
        "gamma_covered": bool(band.low[0] <= truth <= band.high[0]),
        "gamma_error": abs(float(fit.predict(t_max)) / truth - 1),
        "n_cells": fit.n_points,
    }


def calibrate(n_sweeps: int = 200, *, n_boot: int = 1000, first_seed: int = 0) -> Calibration:
    """Run ``n_sweeps`` planted sweeps (seeds ``first_seed`` onwards) and summarise the coverage."""
    sweeps = pd.DataFrame([one_sweep(s, n_boot=n_boot) for s in range(first_seed, first_seed + n_sweeps)])
    return Calibration(
        sweeps,
        float(sweeps["covered"].mean()),
        float(sweeps["gamma_covered"].mean()),
        float(sweeps["gamma_error"].median()),
        float((sweeps["b_high"] - sweeps["b_low"]).median()),
    )


@dataclass(frozen=True)
class AlphaCalibration:
    """The outcome of ``calibrate_alpha``: one row per sweep in ``sweeps``, and the summaries."""

    sweeps: pd.DataFrame  # alpha, alpha_fit, alpha_low, alpha_high, covered, covered_resampled, ...
    coverage_alpha: float  # share of sweeps whose 95% interval of alpha holds the planted alpha
    coverage_resampled: float  # the same for an interval that only resamples cells (no per-cell draws)
    median_alpha_error: float  # median |alpha fitted - planted|
    median_alpha_width: float  # median width of alpha's interval


def one_alpha_sweep(seed: int, *, n_boot: int = 1000) -> dict:
    """Fit the batch law of one planted multi-batch sweep;
    the planted alpha, the fitted one and its intervals."""
    law, table, spacing = planted_sweep(seed, batch_sizes=ALPHA_BATCH_SIZES, alpha_range=ALPHA_RANGE)
    cells = find_optima(load_table(table), n_draws=n_boot, seed=seed)
    usable = cells[cells["ok"].astype(bool) & np.isfinite(cells["lr_opt"])]
    fit = fit_batch_law(usable, "m", n_boot=n_boot, seed=seed)
    # The same law with the cells resampled instead of each cell's own lr_opt draws: what the draws add.
    resampled = fit_batch_law(usable.drop(columns="ln_lr_opt_draws"), "m", n_boot=n_boot, seed=seed)
    return {
        "seed": seed,
        "alpha": law.batch_exp,
        "b": law.b,
        "asymmetry": law.asymmetry,
        "noise_sd": law.noise_sd,
        "spacing": spacing,
        "alpha_fit": fit.alpha,
        "alpha_low": fit.alpha_ci.low,
        "alpha_high": fit.alpha_ci.high,
        "covered": fit.alpha_ci.contains(law.batch_exp),
        "covered_resampled": resampled.alpha_ci.contains(law.batch_exp),
        "alpha_error": abs(fit.alpha - law.batch_exp),
        "n_cells": fit.n_cells,
    }


def calibrate_alpha(n_sweeps: int = 200, *, n_boot: int = 1000, first_seed: int = 0) -> AlphaCalibration:
    """Run ``n_sweeps`` planted multi-batch sweeps
    (seeds ``first_seed`` onwards) and summarise alpha's coverage."""
    sweeps = pd.DataFrame(
        [one_alpha_sweep(s, n_boot=n_boot) for s in range(first_seed, first_seed + n_sweeps)]
    )
    return AlphaCalibration(
        sweeps,
        float(sweeps["covered"].mean()),
        float(sweeps["covered_resampled"].mean()),
        float(sweeps["alpha_error"].median()),
        float((sweeps["alpha_high"] - sweeps["alpha_low"]).median()),
    )


@dataclass(frozen=True)
class MainJobCalibration:
    """The outcome of ``calibrate_main_job``:
    per sweep in ``sweeps``, per budget in ``cells``, and summaries."""

    sweeps: pd.DataFrame  # seed, b_fit, b_low, b_high, covered
    cells: pd.DataFrame  # per budget: mean ln(lr_opt / planted), its sd, rms of error / standard error
    coverage_b: float
    median_b: float
    median_b_width: float


def calibrate_main_job(
    n_sweeps: int = 200,
    *,
    job: MainJobGrid = CPU_MAIN_JOB,
    law: PlantedLaw | None = None,
    n_boot: int = 1000,
    first_seed: int = 0,
) -> MainJobCalibration:
    """Plant ``law`` (default: the job's) on ``job``'s grid ``n_sweeps`` times (new noise each) and fit b as
    ``analyze`` does."""
    law = law or job.law
    grid = SweepGrid(
        models=(job.model,),
        tokens=job.tokens,
        batch_sizes=(job.batch_size,),
        lrs=job.lrs,
        seq_len=job.seq_len,
    )
    rows, cells = [], []
    for seed in range(first_seed, first_seed + n_sweeps):
        found = find_optima(load_table(synthetic_table(law, grid, seed=seed)), n_draws=n_boot, seed=seed)
        fit = fit_gamma(found, n_boot=n_boot, seed=seed).pooled
        rows.append(
            {
                "seed": seed,
                "b_fit": fit.b,
                "b_low": fit.b_ci.low,
                "b_high": fit.b_ci.high,
                "covered": fit.b_ci.contains(law.b),
            }
        )
        error = np.log(found["lr_opt"] / law.lr_opt(found["batch_size"], found["tokens"]))
        cells.append(found[["tokens", "method"]].assign(error=error, z=error / found["ln_lr_opt_se"]))
    sweeps, every = pd.DataFrame(rows), pd.concat(cells, ignore_index=True)
    per_budget = (
        every.groupby("tokens")
        .agg(
            bias=("error", "mean"), sd=("error", "std"), rms_z=("z", lambda z: float(np.sqrt(np.mean(z**2))))
        )
        .reset_index()
    )
    return MainJobCalibration(
        sweeps,
        per_budget,
        float(sweeps["covered"].mean()),
        float(sweeps["b_fit"].median()),
        float((sweeps["b_high"] - sweeps["b_low"]).median()),
    )
