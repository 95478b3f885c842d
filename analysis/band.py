"""Band fits in the manner of Step Law (Li et al. 2025): regress the near-optimal runs, not the optima.

A run is near-optimal when its seed-mean loss is within a relative ``eps`` (default 0.25%, as Step Law)
of the best loss of its group. Three ordinary least-squares laws are fitted on such runs:

* ``lr_law``:    ln lr = c + cN ln N + cT ln T, group = (model, tokens), every batch size competing;
* ``batch_law``: ln B  = c + cT ln T, same band;
* ``gamma_law``: ln(lr / B) = c + cN ln N + cT ln T, group = the cell (model, tokens, batch_size),
  directly comparable with the point fit gamma = a * T**b (cT against b, exp(c) against a).

The ln N term enters only when the models span enough sizes to identify an exponent (3 or more distinct
N over a factor 2 or more); otherwise it is left out and ``notes`` says why. CIs come from a bootstrap over
the groups (model, tokens): a group's band runs share one best loss, so they are resampled together.

>>> band = band_fit(table, eps=0.0025)
>>> band.gamma_law.coef["ln_T"]   # compare with fit_gamma(...).pooled.b
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.optimum import CELL_KEYS, lr_points
from powersweep.analysis.order import model_order

MIN_SIZES = 3  # distinct N for an exponent in N
MIN_SPAN = 2.0  # largest / smallest N
# swept batch sizes for B_opt(T): with one, ln B is a constant and its "law" a fitted zero
MIN_BATCH_SIZES = 3


@dataclass(frozen=True)
class LinearLaw:
    """ln(response) = sum(coef[term] * term); standard errors are the naive OLS ones (points share runs)."""

    response: str  # e.g. "ln_lr"
    coef: dict[str, float] = field(default_factory=dict)  # keys "const", "ln_N", "ln_T"
    se: dict[str, float] = field(default_factory=dict)
    n_points: int = 0
    r2: float = float("nan")
    reason: str = ""
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # 95% bootstrap interval per coefficient
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # "N", "T": the data's span
    boot: np.ndarray = field(default_factory=lambda: np.empty((0, 0)), repr=False)  # (R, terms) samples

    @property
    def ok(self) -> bool:
        return not self.reason

    def predict(self, **terms: float) -> float:
        """The response at ``ln_N=..., ln_T=...`` (log values), back on its own scale (exp)."""
        return float(
            np.exp(self.coef["const"] + sum(v * terms[k] for k, v in self.coef.items() if k != "const"))
        )

    def formula(self) -> str:
        terms = " ".join(
            f"{'+' if v >= 0 else '-'} {abs(v):.4g}*{k}" for k, v in self.coef.items() if k != "const"
        )
        return f"{self.response} = {self.coef.get('const', float('nan')):.4g} {terms}".strip()


@dataclass(frozen=True)
class BandFit:
    """The three band laws and the band width they used."""

    eps: float  # relative: a run is in the band when loss <= (1 + eps) * best loss of its group
    lr_law: LinearLaw
    batch_law: LinearLaw
    gamma_law: LinearLaw
    n_band_runs: int
    notes: tuple[str, ...] = ()  # why a term was left out (missing or too narrow a range of N)


def band_fit(
    table: pd.DataFrame,
    *,
    eps: float = 0.0025,
    schedule: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> BandFit:
    """Fit the band laws on the seed-averaged lr points of ``table`` (diverged points never enter)."""
    if not 0 < eps < 1:
        raise AnalysisError(f"eps={eps}: must be a relative loss tolerance between 0 and 1, e.g. 0.0025")
    points = lr_points(table, schedule=schedule)
    points = points[np.isfinite(points["loss"])].copy()
    group_band = _in_band(points, ["model", "tokens"], eps)
    cell_band = _in_band(points, list(CELL_KEYS), eps)
    points["ln_lr"], points["ln_B"] = np.log(points["lr"]), np.log(points["batch_size"])
    points["ln_T"], points["ln_N"] = np.log(points["tokens"]), np.log(points["n_params"])
    points["ln_gamma"] = points["ln_lr"] - points["ln_B"]
    points["group"] = points.groupby(["model", "tokens"]).ngroup()
    n_terms, notes = _size_terms(points)
    boot = {"n_boot": n_boot, "rng": np.random.default_rng(seed)}
    return BandFit(
        eps=eps,
        lr_law=_ols(points[group_band], "ln_lr", [*n_terms, "ln_T"], **boot),
        batch_law=_batch_law(points, group_band, boot),
        gamma_law=_ols(points[cell_band], "ln_gamma", [*n_terms, "ln_T"], **boot),
        n_band_runs=int(group_band.sum()),
        notes=notes,
    )


def _batch_law(points: pd.DataFrame, band: pd.Series, boot: dict) -> LinearLaw:
    swept = points["batch_size"].nunique()
    if swept < MIN_BATCH_SIZES:
        return LinearLaw(
            "ln_B",
            n_points=int(band.sum()),
            reason=f"the sweep has {swept} batch size(s): B_opt(T) "
            f"needs {MIN_BATCH_SIZES} or more; sweep at least {MIN_BATCH_SIZES} batch sizes",
        )
    return _ols(points[band], "ln_B", ["ln_T"], **boot)


def _size_terms(points: pd.DataFrame) -> tuple[list[str], tuple[str, ...]]:
    """["ln_N"] when the models' sizes can identify an exponent in N, else [] and a note why not."""
    sizes = points.groupby("model")["n_params"].first()
    missing = [m for m in model_order(points) if not np.isfinite(sizes[m])]
    if missing:
        return [], (
            f"band fit without an N term: n_params is missing for model(s) {', '.join(missing)}; "
            "add an n_params column or pass --map n_params=COLUMN",
        )
    distinct = np.unique(sizes.to_numpy(float))
    if len(sizes) > 1 and (len(distinct) < MIN_SIZES or distinct.max() / distinct.min() < MIN_SPAN):
        return [], (
            f"band fit without an N term: the models' sizes ({len(distinct)} distinct, "
            f"{distinct.min():.3g} to {distinct.max():.3g} parameters) are too few or too close to identify "
            f"an exponent in N (needs {MIN_SIZES} or more spanning a factor {MIN_SPAN:g})",
        )
    return (["ln_N"] if len(distinct) > 1 else []), ()


def _in_band(points: pd.DataFrame, keys: list[str], eps: float) -> pd.Series:
    best = points.groupby(keys)["loss"].transform("min")
    return points["loss"] <= (1 + eps) * best


def _ols(
    frame: pd.DataFrame,
    response: str,
    terms: list[str],
    *,
    n_boot: int = 0,
    rng: np.random.Generator | None = None,
) -> LinearLaw:
    # A term with a single value (one model size, or n_params unknown) cannot be separated from the constant.
    terms = [t for t in terms if frame[t].notna().all() and frame[t].nunique() > 1]
    if "ln_T" not in terms:
        return LinearLaw(
            response, n_points=len(frame), reason="needs near-optimal runs at 2 or more token counts"
        )
    design = np.column_stack([np.ones(len(frame))] + [frame[t].to_numpy(float) for t in terms])
    y = frame[response].to_numpy(float)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    resid = y - design @ coef
    dof = len(y) - design.shape[1]
    if dof <= 0:
        return LinearLaw(
            response, n_points=len(y), reason=f"{len(y)} band runs for {design.shape[1]} coefficients"
        )
    cov = np.sum(resid**2) / dof * np.linalg.inv(design.T @ design)
    names = ["const", *terms]
    spread = np.sum((y - y.mean()) ** 2)
    r2 = 1 - np.sum(resid**2) / spread if spread > 0 else np.nan  # every band run at one lr: R^2 undefined
    boot = (
        _group_bootstrap(design, y, frame["group"].to_numpy(), n_boot, rng)
        if n_boot > 0
        else np.empty((0, 0))
    )
    ci = (
        {n: (float(lo), float(hi)) for n, lo, hi in zip(names, *np.percentile(boot, [2.5, 97.5], axis=0))}
        if len(boot) >= 20
        else {}
    )
    ranges = {
        name: (float(frame[column].min()), float(frame[column].max()))
        for name, column in (("N", "n_params"), ("T", "tokens"))
        if frame[column].notna().all()
    }
    return LinearLaw(
        response,
        dict(zip(names, coef.tolist())),
        dict(zip(names, np.sqrt(np.diag(cov)).tolist())),
        len(y),
        float(r2),
        ci=ci,
        ranges=ranges,
        boot=boot,
    )


def _group_bootstrap(
    design: np.ndarray, y: np.ndarray, groups: np.ndarray, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """(R, terms): least squares on resampled groups
    (each group's rows weighted by how often it was drawn)."""
    labels, index = np.unique(groups, return_inverse=True)
    counts = rng.multinomial(len(labels), np.full(len(labels), 1.0 / len(labels)), size=n_boot)  # (R, groups)
    weights = counts[:, index].astype(float)  # (R, rows)
    xtwx = np.einsum("rn,ni,nj->rij", weights, design, design)
    xtwy = np.einsum("rn,ni,n->ri", weights, design, y)
    solvable = np.linalg.matrix_rank(xtwx) == design.shape[1]  # a resample may miss every T but one
    return np.linalg.solve(xtwx[solvable], xtwy[solvable][..., None])[..., 0]
