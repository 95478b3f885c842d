"""Band fits in the manner of Step Law (Li et al. 2025): regress the near-optimal runs, not the optima.

A run is near-optimal when its seed-mean loss is within a relative ``eps`` of the best loss of its
group. Three ordinary least-squares laws are fitted on such runs:

* ``lr_law``:    ln lr = c + cN ln N + cT ln T, group = (model, tokens), every batch size competing;
* ``batch_law``: ln B  = c + cT ln T, same band;
* ``gamma_law``: ln(lr / B) = c + cN ln N + cT ln T, group = the cell (model, tokens, batch_size),
  directly comparable with the point fit gamma = a * T**b (cT against b, exp(c) against a).

>>> band = band_fit(table, eps=0.003)
>>> band.gamma_law.coef["ln_T"]   # compare with fit_gamma(...).pooled.b
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError
from analysis.optimum import CELL_KEYS, lr_points


@dataclass(frozen=True)
class LinearLaw:
    """ln(response) = sum(coef[term] * term); standard errors are the naive OLS ones (points share runs)."""

    response: str  # e.g. "ln_lr"
    coef: dict[str, float] = field(default_factory=dict)  # keys "const", "ln_N", "ln_T"
    se: dict[str, float] = field(default_factory=dict)
    n_points: int = 0
    r2: float = float("nan")
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def formula(self) -> str:
        terms = " ".join(f"{'+' if v >= 0 else '-'} {abs(v):.4g}*{k}" for k, v in self.coef.items() if k != "const")
        return f"{self.response} = {self.coef.get('const', float('nan')):.4g} {terms}".strip()


@dataclass(frozen=True)
class BandFit:
    """The three band laws and the band width they used."""

    eps: float  # relative: a run is in the band when loss <= (1 + eps) * best loss of its group
    lr_law: LinearLaw
    batch_law: LinearLaw
    gamma_law: LinearLaw
    n_band_runs: int


def band_fit(table: pd.DataFrame, *, eps: float = 0.003, schedule: str | None = None) -> BandFit:
    """Fit the band laws on the seed-averaged lr points of ``table`` (diverged points never enter)."""
    if not 0 < eps < 1:
        raise AnalysisError(f"eps={eps}: must be a relative loss tolerance between 0 and 1, e.g. 0.003")
    points = lr_points(table, schedule=schedule)
    points = points[np.isfinite(points["loss"])].copy()
    group_band = _in_band(points, ["model", "tokens"], eps)
    cell_band = _in_band(points, list(CELL_KEYS), eps)
    points["ln_lr"], points["ln_B"] = np.log(points["lr"]), np.log(points["batch_size"])
    points["ln_T"], points["ln_N"] = np.log(points["tokens"]), np.log(points["n_params"])
    points["ln_gamma"] = points["ln_lr"] - points["ln_B"]
    return BandFit(
        eps=eps, lr_law=_ols(points[group_band], "ln_lr", ["ln_N", "ln_T"]),
        batch_law=_ols(points[group_band], "ln_B", ["ln_T"]),
        gamma_law=_ols(points[cell_band], "ln_gamma", ["ln_N", "ln_T"]), n_band_runs=int(group_band.sum()),
    )


def _in_band(points: pd.DataFrame, keys: list[str], eps: float) -> pd.Series:
    best = points.groupby(keys)["loss"].transform("min")
    return points["loss"] <= (1 + eps) * best


def _ols(frame: pd.DataFrame, response: str, terms: list[str]) -> LinearLaw:
    # A term with a single value (one model size, or n_params unknown) cannot be separated from the constant.
    terms = [t for t in terms if frame[t].notna().all() and frame[t].nunique() > 1]
    if "ln_T" not in terms:
        return LinearLaw(response, n_points=len(frame), reason="needs near-optimal runs at 2 or more token counts")
    design = np.column_stack([np.ones(len(frame))] + [frame[t].to_numpy(float) for t in terms])
    y = frame[response].to_numpy(float)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = len(y) - design.shape[1]
    if dof <= 0:
        return LinearLaw(response, n_points=len(y), reason=f"{len(y)} band runs for {design.shape[1]} coefficients")
    cov = np.sum(resid**2) / dof * np.linalg.inv(design.T @ design)
    names = ["const", *terms]
    spread = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum(resid**2) / spread if spread > 0 else np.nan  # every band run at one lr: R^2 undefined
    return LinearLaw(response, dict(zip(names, coef.tolist())), dict(zip(names, np.sqrt(np.diag(cov)).tolist())),
                     len(y), float(r2))
