"""Do the gamma law's intervals mean what they say? Coverage by simulation over planted sweeps.

Each simulated sweep draws a planted law gamma = a * T**b (a log-uniform in [2, 10], b uniform in
[-0.65, -0.35]), asymmetric loss bowls (2 to 4 times steeper above lr_opt), a noise level, and an lr
grid of random spacing (a factor sqrt(2) to 2) and random offset, then runs the per-cell estimator and
the pooled fit as ``analyze`` does. Over many sweeps a 95% interval of b should hold the planted b in
about 95% of them.

>>> summary = calibrate(n_sweeps=200, n_boot=1000)
>>> summary.coverage_b, summary.median_gamma_error
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.fit import fit_gamma
from analysis.optimum import find_optima
from analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from analysis.table import load_table

TOKENS = (2e9, 8e9, 32e9, 128e9)
BATCH_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Calibration:
    """The outcome of ``calibrate``: one row per sweep in ``sweeps``, and the summaries."""

    sweeps: pd.DataFrame  # a, b, asymmetry, noise_sd, spacing, b_low, b_high, covered, gamma_error
    coverage_b: float  # share of sweeps whose 95% interval of b holds the planted b
    coverage_gamma: float  # the same for gamma at the largest T (the fit's pointwise band)
    median_gamma_error: float  # median |gamma(T_max) fitted / planted - 1|
    median_b_width: float  # median width of the b interval


def planted_sweep(seed: int) -> tuple[PlantedLaw, pd.DataFrame, float]:
    """A random planted law, its sweep's table and the grid spacing (ratio of neighbouring lrs)."""
    rng = np.random.default_rng(seed)
    law = PlantedLaw(a=float(np.exp(rng.uniform(np.log(2), np.log(10)))), b=float(rng.uniform(-0.65, -0.35)),
                     asymmetry=float(rng.uniform(2.0, 4.0)), noise_sd=float(rng.uniform(0.001, 0.004)),
                     curvature=float(rng.uniform(0.015, 0.04)))
    spacing = float(rng.uniform(np.sqrt(2), 2.0))
    optima = law.lr_opt(np.array(BATCH_SIZES)[:, None], np.array(TOKENS)[None, :])
    low, high = optima.min() / 12, optima.max() * 12  # the divergence above 8x lr_opt trims the top
    steps = np.arange(int(np.ceil(np.log(high / low) / np.log(spacing))) + 1)
    lrs = low * spacing ** (steps + rng.uniform(0.0, 1.0))  # the grid lands anywhere relative to lr_opt
    grid = SweepGrid(models=(("m", 36e6),), tokens=TOKENS, batch_sizes=BATCH_SIZES, lrs=tuple(lrs.tolist()))
    return law, synthetic_table(law, grid, seed=seed), spacing


def one_sweep(seed: int, *, n_boot: int = 1000) -> dict:
    """Fit one planted sweep; the planted values, the fitted ones and whether the intervals hold them."""
    law, table, spacing = planted_sweep(seed)
    cells = find_optima(load_table(table), n_draws=n_boot, seed=seed)
    fit = fit_gamma(cells, n_boot=n_boot, seed=seed).pooled
    t_max = max(TOKENS)
    truth = law.a * t_max**law.b
    band = fit.band([t_max])
    return {"seed": seed, "a": law.a, "b": law.b, "asymmetry": law.asymmetry, "noise_sd": law.noise_sd,
            "spacing": spacing, "b_fit": fit.b, "b_low": fit.b_ci.low, "b_high": fit.b_ci.high,
            "covered": fit.b_ci.contains(law.b), "gamma_covered": bool(band.low[0] <= truth <= band.high[0]),
            "gamma_error": abs(float(fit.predict(t_max)) / truth - 1), "n_cells": fit.n_points}


def calibrate(n_sweeps: int = 200, *, n_boot: int = 1000, first_seed: int = 0) -> Calibration:
    """Run ``n_sweeps`` planted sweeps (seeds ``first_seed`` onwards) and summarise the coverage."""
    sweeps = pd.DataFrame([one_sweep(s, n_boot=n_boot) for s in range(first_seed, first_seed + n_sweeps)])
    return Calibration(sweeps, float(sweeps["covered"].mean()), float(sweeps["gamma_covered"].mean()),
                       float(sweeps["gamma_error"].median()), float((sweeps["b_high"] - sweeps["b_low"]).median()))
