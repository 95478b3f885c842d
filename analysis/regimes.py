"""Batch-size regimes and lr sensitivity, after the Time Transfer paper (Filatov et al. 2024).

Per (model, T), lr_opt against batch size B is fitted with

    lr_opt(B) = 2 * lr_peak / (sqrt(B / Bc) + sqrt(Bc / B))        (= lr_peak / cosh(ln(B / Bc) / 2))

which rises as sqrt(B) below the critical batch size Bc, peaks at Bc and falls above it. Then
Bc(T) = c * T**zeta is fitted across T (Time Transfer reports Bc ~ T), each cell is labelled
small_batch (B < Bc / f), near_critical or large_batch (B > Bc * f), and the sensitivity of the
loss to the lr (curvature in ln lr at the optimum; Time Transfer: it falls as T grows) is fitted
as a power law in T.

>>> critical = fit_critical_batch(cells)
>>> critical.law.b, critical.law.b_ci    # the exponent zeta of Bc(T) = c * T**zeta
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
from scipy import optimize

from powersweep.analysis.fit import PowerLawFit, fit_power_law
from powersweep.analysis.order import in_model_order, model_order

REGIMES = ("small_batch", "near_critical", "large_batch", "unknown")
_LN2 = float(np.log(2.0))


def surge_curve(batch_size: np.ndarray | float, lr_peak: float, bc: float) -> np.ndarray:
    """lr_opt(B) = 2 * lr_peak / (sqrt(B / Bc) + sqrt(Bc / B)); batch sizes in sequences."""
    ratio = np.asarray(batch_size, dtype=float) / bc
    return 2 * lr_peak / (np.sqrt(ratio) + np.sqrt(1 / ratio))


def _ln_shape(ln_b: np.ndarray, ln_bc: np.ndarray | float) -> np.ndarray:
    # ln of 1 / cosh(u / 2), written with logaddexp so large |u| cannot overflow.
    half = (ln_b - ln_bc) / 2
    return _LN2 - np.logaddexp(half, -half)


@dataclass(frozen=True)
class CriticalBatch:
    """Per-(model, T) critical batch sizes and the law Bc(T) = c * T**zeta (``law.a``, ``law.b``)."""

    per_tokens: pd.DataFrame  # model, tokens, lr_peak, bc, ln_bc_se, n_cells, flag
    law: PowerLawFit


def fit_critical_batch(cells: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> CriticalBatch:
    """Fit the surge curve per (model, T) on the ``ok`` cells, then Bc(T) on the unflagged ones.

    A Bc outside the swept batch sizes is only a bound: its row has ``bc`` NaN and the flag
    ``bc_below_range`` or ``bc_above_range`` (the paper's lr ~ B data give the latter), and it is
    left out of the Bc(T) fit.
    """
    usable = cells[cells["ok"].astype(bool) & np.isfinite(cells["lr_opt"])]
    rows = [
        {"model": m, "tokens": t, **_fit_surge(g)}
        for (m, t), g in usable.groupby(["model", "tokens"], sort=True)
    ]
    per_tokens = pd.DataFrame(
        rows, columns=["model", "tokens", "lr_peak", "bc", "ln_bc_se", "n_cells", "flag"]
    )
    good = per_tokens[per_tokens["flag"].eq("")]
    law = fit_power_law(good["tokens"], good["bc"], se=good["ln_bc_se"], n_boot=n_boot, seed=seed)
    if len(per_tokens) and not len(good):
        law = _with_reason(
            law,
            f"no T has its critical batch size inside the swept batch sizes "
            f"(flags: {sorted(set(per_tokens['flag']))}); sweep wider batch sizes",
        )
    return CriticalBatch(in_model_order(per_tokens, model_order(cells)), law)


def _with_reason(fit: PowerLawFit, reason: str) -> PowerLawFit:
    return replace(fit, reason=reason)


def _fit_surge(group: pd.DataFrame) -> dict:
    ln_b = np.log(group["batch_size"].to_numpy(float))
    ln_lr = np.log(group["lr_opt"].to_numpy(float))
    se = group["ln_lr_opt_se"].to_numpy(float)
    w = (
        1.0
        / np.where(np.isfinite(se) & (se > 0), se, np.nanmedian(se) if np.isfinite(se).any() else 1.0) ** 2
    )
    if len(np.unique(ln_b)) < 3:
        return {
            "lr_peak": np.nan,
            "bc": np.nan,
            "ln_bc_se": np.nan,
            "n_cells": len(ln_b),
            "flag": "too_few_batch_sizes",
        }
    ln_bc = _best_ln_bc(ln_b, ln_lr, w)
    ln_peak = float(np.sum(w * (ln_lr - _ln_shape(ln_b, ln_bc))) / np.sum(w))
    if ln_b.min() <= ln_bc <= ln_b.max():
        return {
            "lr_peak": np.exp(ln_peak),
            "bc": np.exp(ln_bc),
            "ln_bc_se": _ln_bc_se(ln_b, ln_lr, w, ln_peak, ln_bc),
            "n_cells": len(ln_b),
            "flag": "",
        }
    # Outside the swept batch sizes the fit only bounds Bc: report no value, only the side.
    flag = "bc_below_range" if ln_bc < ln_b.min() else "bc_above_range"
    return {"lr_peak": np.exp(ln_peak), "bc": np.nan, "ln_bc_se": np.nan, "n_cells": len(ln_b), "flag": flag}


def _profile_chi2(ln_bc: np.ndarray, ln_b: np.ndarray, ln_lr: np.ndarray, w: np.ndarray) -> np.ndarray:
    """chi2 at each candidate ln Bc, with ln lr_peak solved in closed form (it enters linearly)."""
    shape = _ln_shape(ln_b[None, :], np.atleast_1d(ln_bc)[:, None])  # (candidates, cells)
    ln_peak = np.sum(w * (ln_lr - shape), axis=1, keepdims=True) / np.sum(w)
    return np.sum(w * (ln_lr - ln_peak - shape) ** 2, axis=1)


def _best_ln_bc(ln_b: np.ndarray, ln_lr: np.ndarray, w: np.ndarray) -> float:
    # Search 3 e-folds beyond the swept batch sizes, so a Bc outside them shows up as such.
    grid = np.linspace(ln_b.min() - 3, ln_b.max() + 3, 241)
    j = int(np.argmin(_profile_chi2(grid, ln_b, ln_lr, w)))
    low, high = grid[max(j - 1, 0)], grid[min(j + 1, len(grid) - 1)]
    best = optimize.minimize_scalar(
        lambda u: float(_profile_chi2(u, ln_b, ln_lr, w)[0]),
        bounds=(low, high),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return float(best.x)


def _ln_bc_se(ln_b, ln_lr, w, ln_peak: float, ln_bc: float) -> float:
    resid = ln_lr - ln_peak - _ln_shape(ln_b, ln_bc)
    dof = len(ln_b) - 2
    # d(model)/d(ln peak, ln Bc)
    jac = np.column_stack([np.ones_like(ln_b), 0.5 * np.tanh((ln_b - ln_bc) / 2)])
    info = jac.T @ (w[:, None] * jac)
    if dof <= 0 or np.linalg.cond(info) > 1e12:
        return float("nan")
    return float(np.sqrt(np.sum(w * resid**2) / dof * np.linalg.inv(info)[1, 1]))


def label_regimes(cells: pd.DataFrame, critical: CriticalBatch, *, near_factor: float = 3.0) -> pd.DataFrame:
    """Add ``bc`` (sequences), ``batch_over_bc`` and ``regime`` to each cell.

    Bc comes from the cell's own (model, T) fit when that one is unflagged, else from the Bc(T) law.
    """
    per = critical.per_tokens[critical.per_tokens["flag"].eq("")][["model", "tokens", "bc"]]
    out = cells.drop(columns=[c for c in ("bc", "batch_over_bc", "regime") if c in cells.columns])
    out = out.merge(per, on=["model", "tokens"], how="left")
    if critical.law.ok:
        out["bc"] = out["bc"].fillna(
            pd.Series(critical.law.predict(out["tokens"].to_numpy(float)), index=out.index)
        )
    out["batch_over_bc"] = out["batch_size"] / out["bc"]
    ratio = out["batch_over_bc"]
    out["regime"] = np.select(
        [ratio < 1 / near_factor, ratio > near_factor, ratio.notna()],
        ["small_batch", "large_batch", "near_critical"],
        default="unknown",
    )
    return out


@dataclass(frozen=True)
class Sensitivity:
    """How sharply the loss depends on ln(lr) at the optimum, and how that changes with T."""

    per_tokens: pd.DataFrame  # model, tokens, curvature and penalty_2x (medians over batch sizes), n_cells
    pooled: PowerLawFit  # curvature = c * T**s over all models
    per_model: dict[str, PowerLawFit]


def sensitivity(cells: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> Sensitivity:
    """Fit curvature (nats per (ln lr)**2) = c * T**s over the ``ok`` cells with a quadratic optimum.

    ``penalty_2x`` = curvature / 2 * ln(2)**2 is the loss (nats) of an lr off by a factor 2.
    """
    usable = cells[
        cells["ok"].astype(bool) & cells["method"].isin(["bowl", "quadratic"]) & (cells["curvature"] > 0)
    ]
    per_tokens = (
        usable.groupby(["model", "tokens"], sort=True)
        .agg(
            curvature=("curvature", "median"),
            penalty_2x=("penalty_2x", "median"),
            n_cells=("curvature", "size"),
            n_params=("n_params", "first"),
        )
        .reset_index()
    )
    pooled = fit_power_law(usable["tokens"], usable["curvature"], n_boot=n_boot, seed=seed)
    fits = {
        str(m): fit_power_law(g["tokens"], g["curvature"], n_boot=n_boot, seed=seed + i + 1)
        for i, (m, g) in enumerate(usable.groupby("model", sort=True))
    }  # seeds as before: the same numbers
    order = model_order(usable)
    return Sensitivity(in_model_order(per_tokens, order), pooled, {m: fits[m] for m in order})
