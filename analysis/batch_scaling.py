"""How lr_opt scales with batch size, per model: lr_opt = c * B**alpha * T**beta, with bootstrap intervals.

The paper's law gamma = lr_opt / B = a * T**b assumes alpha = 1: double the batch, double the lr. Real
sweeps often show alpha well below 1 (lr_opt grows with B at a slope of 0.1-0.6 in log-log), and then
gamma is not batch-invariant and a gamma law fitted over several batch sizes mispredicts at every other
one. This module fits alpha per model on all of its ``ok`` cells, with the same parametric bootstrap as
the gamma fit (each cell's lr_opt draws, plus the scatter about the law), and says which law holds.

>>> laws = fit_batch_laws(cells, n_boot=1000)
>>> laws["36M"].alpha, laws["36M"].alpha_ci, laws["36M"].linear
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from powersweep.analysis.fit import CI_LEVEL, Interval, gamma_draws
from powersweep.analysis.order import model_order

TERMS = ("ln_c", "alpha", "beta")


@dataclass(frozen=True)
class BatchLaw:
    """lr_opt = c * batch_size**alpha * tokens**beta for one model; ``ok`` is False with a ``reason``."""

    model: str
    coef: dict[str, float]  # ln_c, alpha, beta
    ci: dict[str, Interval]
    n_cells: int
    batch_range: tuple[float, float]  # sequences
    tokens_range: tuple[float, float]
    boot: np.ndarray = field(repr=False)  # (R, 3) bootstrap samples of (ln c, alpha, beta)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    @property
    def alpha(self) -> float:
        return self.coef["alpha"]

    @property
    def alpha_ci(self) -> Interval:
        return self.ci["alpha"]

    @property
    def linear(self) -> bool:
        """True when alpha = 1 is inside its interval: gamma = lr_opt / B is batch-invariant."""
        return self.ok and self.alpha_ci.contains(1.0)

    def predict(self, batch_size: float, tokens: float) -> float:
        return math.exp(
            self.coef["ln_c"] + self.alpha * math.log(batch_size) + self.coef["beta"] * math.log(tokens)
        )

    def interval(self, batch_size: float, tokens: float) -> Interval:
        """95% interval of lr_opt at (batch_size, tokens) from the paired bootstrap samples."""
        if not len(self.boot):
            return Interval(float("nan"), float("nan"))
        ln_lr = self.boot @ np.array([1.0, math.log(batch_size), math.log(tokens)])
        tail = 100 * (1 - CI_LEVEL) / 2
        low, high = np.percentile(ln_lr, [tail, 100 - tail])
        return Interval(math.exp(low), math.exp(high))


def fit_batch_laws(cells: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> dict[str, BatchLaw]:
    """One ``BatchLaw`` per model, smallest first, fitted on the model's ``ok`` cells with a finite lr_opt."""
    usable = cells[cells["ok"].astype(bool) & np.isfinite(cells["lr_opt"])]
    return {
        m: fit_batch_law(usable[usable["model"].eq(m)], m, n_boot=n_boot, seed=seed + i)
        for i, m in enumerate(model_order(usable))
    }


def fit_batch_law(cells: pd.DataFrame, model: str, *, n_boot: int = 1000, seed: int = 0) -> BatchLaw:
    """Weighted least squares of ln lr_opt on (1, ln B, ln T); weights 1 / (se**2 + scatter**2)."""
    batch, tokens = cells["batch_size"].to_numpy(float), cells["tokens"].to_numpy(float)
    ranges = (
        ((float(batch.min()), float(batch.max())), (float(tokens.min()), float(tokens.max())))
        if len(cells)
        else ((math.nan, math.nan), (math.nan, math.nan))
    )
    reason = _unidentified(batch, tokens)
    if reason:
        return _failed(model, len(cells), ranges, reason)
    design = np.column_stack([np.ones(len(cells)), np.log(batch), np.log(tokens)])
    y = np.log(cells["lr_opt"].to_numpy(float))
    se = cells["ln_lr_opt_se"].to_numpy(float)
    coef, w, tau2 = _weighted_fit(design, y, se)
    boot = _bootstrap(design, y, coef, w, tau2, _draws(cells), n_boot, np.random.default_rng(seed))
    ci = _intervals(boot) if len(boot) else {t: Interval(math.nan, math.nan) for t in TERMS}
    return BatchLaw(model, dict(zip(TERMS, coef.tolist())), ci, len(cells), *ranges, boot)


def _unidentified(batch: np.ndarray, tokens: np.ndarray) -> str:
    if len(np.unique(batch)) < 2:
        return f"needs 2 or more batch sizes among the usable cells, got {len(np.unique(batch))}"
    if len(np.unique(tokens)) < 2:
        return f"needs 2 or more token counts among the usable cells, got {len(np.unique(tokens))}"
    if len(batch) < 5:
        return f"needs 5 or more usable cells for 3 coefficients and their scatter, got {len(batch)}"
    return ""


def _weighted_fit(design: np.ndarray, y: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    se = np.where(np.isfinite(se) & (se > 0), se, np.nanmedian(se) if np.isfinite(se).any() else 1.0)
    plain = np.linalg.lstsq(design, y, rcond=None)[0]
    resid_var = float(np.sum((y - design @ plain) ** 2) / max(len(y) - 3, 1))
    tau2 = max(0.0, resid_var - float(np.mean(se**2)))  # scatter beyond the cells' own errors
    w = 1.0 / (se**2 + tau2)
    coef = np.linalg.solve(design.T @ (w[:, None] * design), design.T @ (w * y))
    return coef, w, tau2


def _draws(cells: pd.DataFrame) -> np.ndarray | None:
    gamma = gamma_draws(cells)  # ln(lr_opt / B) draws
    return None if gamma is None else gamma + np.log(cells["batch_size"].to_numpy(float))[:, None]


def _bootstrap(design, y, coef, w, tau2: float, draws, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(R, 3): refits of line + (draw - estimate) + N(0, tau2); cells resampled when there are no draws."""
    if n_boot <= 0:
        return np.empty((0, 3))
    solve = np.linalg.inv(design.T @ (w[:, None] * design)) @ (design.T * w)  # (3, n)
    if draws is not None and draws.shape[1] >= n_boot:
        noise = draws[:, :n_boot] - y[:, None] + math.sqrt(tau2) * rng.standard_normal((len(y), n_boot))
        return (solve @ ((design @ coef)[:, None] + noise)).T
    resid = y - design @ coef
    picks = rng.integers(0, len(y), (n_boot, len(y)))
    return (solve @ ((design @ coef)[:, None] + resid[picks].T)).T


def _intervals(boot: np.ndarray) -> dict[str, Interval]:
    tail = 100 * (1 - CI_LEVEL) / 2
    low, high = np.percentile(boot, [tail, 100 - tail], axis=0)
    return {t: Interval(float(lo), float(hi)) for t, lo, hi in zip(TERMS, low, high)}


def _failed(model: str, n: int, ranges, reason: str) -> BatchLaw:
    nan = float("nan")
    return BatchLaw(
        model,
        {t: nan for t in TERMS},
        {t: Interval(nan, nan) for t in TERMS},
        n,
        *ranges,
        np.empty((0, 3)),
        reason,
    )
