"""The optimal learning rate of each cell (model, tokens, batch_size), finer than the grid argmin.

Seeds of one lr are averaged first. A diverged run is worse than any finite loss: an lr where any
seed diverged can never be the optimum, and its loss is never averaged. Around the grid argmin a
quadratic in ln(lr) is fitted; its vertex is the sub-grid estimate, kept only when the quadratic is
convex and the vertex lies inside the fitted window. Cells whose best lr is at an end of the grid,
or next to a diverged lr, are flagged ``edge_low``/``edge_high`` and marked not ``ok``.

>>> cells = find_optima(table)
>>> cells[["model", "tokens", "batch_size", "lr_opt", "lr_opt_se", "flags"]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.errors import AnalysisError

CELL_KEYS = ("model", "tokens", "batch_size")
# Flags that keep a cell out of point fits: its optimum is not bracketed by finite losses.
BLOCKING_FLAGS = frozenset({"all_diverged", "too_few_points", "edge_low", "edge_high"})
CELL_COLUMNS = (
    *CELL_KEYS, "n_params", "lr_opt", "lr_opt_se", "ln_lr_opt_se", "lr_opt_grid", "loss_opt", "loss_opt_grid", "method",
    "curvature", "penalty_2x", "n_points", "n_finite", "n_diverged", "n_runs", "edge_low", "edge_high", "ok", "flags",
    "reason",
)
_LN2_SQUARED = math.log(2.0) ** 2


def choose_schedule(table: pd.DataFrame, schedule: str | None = None) -> str | None:
    """The schedule whose runs locate lr_opt: ``schedule`` if given, else the table's only non-power one.

    Returns None when the table holds power runs only. Raises ``AnalysisError`` when schedules are mixed.
    """
    names = sorted(set(table["schedule"].unique().tolist()) - {"power"})
    if schedule is not None:
        if schedule not in names:
            raise AnalysisError(f"schedule={schedule!r} has no runs in the table: choose one of {names}")
        return schedule
    if len(names) > 1:
        raise AnalysisError(f"the table mixes schedules {names} whose optimal lr differ: "
                            "choose one with schedule=NAME (--schedule NAME)")
    return names[0] if names else None


def model_order(frame: pd.DataFrame) -> list[str]:
    """Model names from smallest to largest n_params (by name where n_params is unknown)."""
    sizes = frame.groupby("model")["n_params"].median() if "n_params" in frame else pd.Series(dtype=float)
    names = frame["model"].unique().tolist()
    return sorted(names, key=lambda m: (not np.isfinite(sizes.get(m, np.nan)), sizes.get(m, 0.0), m))


def lr_points(table: pd.DataFrame, *, schedule: str | None = None) -> pd.DataFrame:
    """One row per (model, tokens, batch_size, lr): the mean loss over seeds, +inf if any seed diverged.

    Failed runs (status 'failed': the job broke, the lr is not to blame) are left out.
    Columns: the cell keys, lr, loss (nats/token), n_runs, n_diverged, n_params.
    """
    name = choose_schedule(table, schedule)
    runs = table[table["schedule"].eq(name) & ~table["status"].eq("failed")]
    frame = runs.assign(loss_ok=runs["loss_eval"].where(runs["status"].eq("ok")),
                        diverged=runs["status"].eq("diverged"))
    points = frame.groupby([*CELL_KEYS, "lr"], sort=True).agg(
        loss=("loss_ok", "mean"), n_runs=("loss_ok", "size"), n_diverged=("diverged", "sum"),
        n_params=("n_params", "first"),
    ).reset_index()
    points["loss"] = points["loss"].where(points["n_diverged"].eq(0), np.inf)
    return points


@dataclass(frozen=True)
class _Quadratic:
    """loss ~ c0 + c1*d + c2*d**2 with d = ln(lr) - ln(grid argmin), fitted on d in [low, high]."""

    coef: np.ndarray  # (3,)
    xtx_inv: np.ndarray  # (3, 3)
    rss: float
    dof: int
    low: float
    high: float

    @property
    def vertex(self) -> float:
        return -self.coef[1] / (2.0 * self.coef[2])

    @property
    def accepted(self) -> bool:
        return self.coef[2] > 0 and self.low <= self.vertex <= self.high


@dataclass(frozen=True)
class _CellFit:
    lr: np.ndarray  # sorted grid of the cell
    loss: np.ndarray  # seed-mean loss, +inf where diverged
    n_runs: int
    best: int | None  # index of the grid argmin; None when every lr diverged
    quad: _Quadratic | None
    flags: tuple[str, ...]
    reason: str


def find_optima(table: pd.DataFrame, *, schedule: str | None = None, half_width: int = 2) -> pd.DataFrame:
    """One row per cell with lr_opt_grid, lr_opt, lr_opt_se, loss_opt, n_points, n_diverged and flags.

    ``half_width`` grid points on each side of the argmin enter the quadratic (fewer where a
    neighbour diverged). ``lr_opt_se`` is in lr units, ``ln_lr_opt_se`` is the standard error of
    ln(lr_opt); ``curvature`` is d2(loss)/d(ln lr)^2 at the optimum (nats) and ``penalty_2x`` the
    loss (nats) of an lr off by a factor 2. ``ok`` is False for flagged cells, with a ``reason``.
    """
    if half_width < 1:
        raise AnalysisError(f"half_width={half_width}: must be at least 1 grid point on each side")
    points = lr_points(table, schedule=schedule) if len(table) else pd.DataFrame()
    if points.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in CELL_COLUMNS})
    bounds = _group_bounds(points)
    fits = [_fit_cell(points.iloc[s:e], half_width) for s, e in bounds]
    noise_var = _pooled_noise(fits)
    rows = [_cell_row(fit, noise_var) for fit in fits]
    keys = points.iloc[[s for s, _ in bounds]][[*CELL_KEYS, "n_params"]].reset_index(drop=True)
    return pd.concat([keys, pd.DataFrame(rows)], axis=1)[list(CELL_COLUMNS)]


def _group_bounds(points: pd.DataFrame) -> list[tuple[int, int]]:
    codes = points.groupby(list(CELL_KEYS), sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return list(zip(starts.tolist(), np.r_[starts[1:], len(codes)].tolist()))


def _fit_cell(cell: pd.DataFrame, half_width: int) -> _CellFit:
    lr, loss = cell["lr"].to_numpy(float), cell["loss"].to_numpy(float)
    finite, n_runs = np.isfinite(loss), int(cell["n_runs"].sum())
    if not finite.any():
        reason = f"all {len(lr)} lrs diverged: lower the lr grid"
        return _CellFit(lr, loss, n_runs, None, None, ("all_diverged",), reason)
    best = int(np.argmin(np.where(finite, loss, np.inf)))
    flags, reasons = _edge_flags(lr, finite, best)
    if finite.sum() < 3:
        flags.append("too_few_points")
        reasons.append(f"only {int(finite.sum())} finite lr(s), need 3: add lrs around {lr[best]:.3g}")
    quad = None if flags else _fit_window(np.log(lr), loss, finite, best, half_width)
    if quad is not None and not quad.accepted:
        flags.append("quadratic_rejected")  # not blocking: the grid argmin stands, with a wider error
    return _CellFit(lr, loss, n_runs, best, quad, tuple(flags), "; ".join(reasons))


def _edge_flags(lr: np.ndarray, finite: np.ndarray, best: int) -> tuple[list[str], list[str]]:
    flags, reasons = [], []
    if best == 0:
        flags.append("edge_low")
        reasons.append(f"best lr {lr[best]:.3g} is the lowest of the grid: extend the grid down")
    elif not finite[best - 1]:
        flags.append("edge_low")
        reasons.append(f"the lr below the best one ({lr[best - 1]:.3g}) diverged")
    if best == len(lr) - 1:
        flags.append("edge_high")
        reasons.append(f"best lr {lr[best]:.3g} is the highest of the grid: extend the grid up")
    elif not finite[best + 1]:
        flags.append("edge_high")
        reasons.append(f"the lr above the best one ({lr[best + 1]:.3g}) diverged: the optimum may sit at the edge")
    return flags, reasons


def _fit_window(x: np.ndarray, y: np.ndarray, finite: np.ndarray, best: int, half_width: int) -> _Quadratic | None:
    low = high = best
    while low > 0 and best - low < half_width and finite[low - 1]:
        low -= 1
    while high < len(x) - 1 and high - best < half_width and finite[high + 1]:
        high += 1
    if high - low < 2:
        return None
    d = x[low:high + 1] - x[best]  # centred on the argmin so the normal equations stay well conditioned
    design = np.vander(d, 3, increasing=True)
    xtx_inv = np.linalg.inv(design.T @ design)
    coef = xtx_inv @ design.T @ y[low:high + 1]
    rss = float(np.sum((y[low:high + 1] - design @ coef) ** 2))
    return _Quadratic(coef, xtx_inv, rss, len(d) - 3, float(d[0]), float(d[-1]))


def _pooled_noise(fits: list[_CellFit]) -> float | None:
    # One noise variance for all cells: a 5-point window leaves 2 degrees of freedom, too few alone.
    quads = [f.quad for f in fits if f.quad is not None and f.quad.accepted and f.quad.dof > 0]
    dof = sum(q.dof for q in quads)
    return sum(q.rss for q in quads) / dof if dof else None


def _cell_row(fit: _CellFit, noise_var: float | None) -> dict:
    finite = np.isfinite(fit.loss)
    row = {
        "n_points": len(fit.lr), "n_finite": int(finite.sum()), "n_diverged": int((~finite).sum()),
        "n_runs": fit.n_runs,
        "edge_low": "edge_low" in fit.flags, "edge_high": "edge_high" in fit.flags,
        "ok": not BLOCKING_FLAGS.intersection(fit.flags), "flags": ";".join(fit.flags), "reason": fit.reason,
    }
    return row | (_no_optimum() if fit.best is None else _optimum(fit, noise_var))


def _no_optimum() -> dict:
    nan = float("nan")
    return {"lr_opt": nan, "lr_opt_se": nan, "ln_lr_opt_se": nan, "lr_opt_grid": nan, "loss_opt": nan,
            "loss_opt_grid": nan, "method": "none", "curvature": nan, "penalty_2x": nan}


def _optimum(fit: _CellFit, noise_var: float | None) -> dict:
    x, best = np.log(fit.lr), fit.best
    # A grid argmin is off by up to half a step, uniformly: sd = step / sqrt(12) in ln(lr).
    grid_se = _grid_step(x, best) / math.sqrt(12.0)
    quad = fit.quad if fit.quad is not None and fit.quad.accepted else None
    if quad is None:
        ln_opt, se, loss_opt, curvature, method = x[best], grid_se, fit.loss[best], float("nan"), "grid"
    else:
        c0, c1, c2 = quad.coef
        ln_opt, loss_opt, curvature, method = x[best] + quad.vertex, c0 - c1 * c1 / (4 * c2), 2 * c2, "quadratic"
        # Floor: one lucky low-residual fit must not dominate a weighted fit downstream.
        se = max(_vertex_se(quad, noise_var), grid_se / 4) if noise_var is not None else grid_se
    lr_opt = math.exp(ln_opt)
    return {"lr_opt": lr_opt, "lr_opt_se": lr_opt * se, "ln_lr_opt_se": se, "lr_opt_grid": fit.lr[best],
            "loss_opt": loss_opt, "loss_opt_grid": fit.loss[best], "method": method, "curvature": curvature,
            "penalty_2x": curvature / 2 * _LN2_SQUARED}


def _grid_step(x: np.ndarray, best: int) -> float:
    low, high = max(best - 1, 0), min(best + 1, len(x) - 1)
    return (x[high] - x[low]) / max(high - low, 1)


def _vertex_se(quad: _Quadratic, noise_var: float) -> float:
    _, c1, c2 = quad.coef
    grad = np.array([0.0, -1.0 / (2 * c2), c1 / (2 * c2 * c2)])  # d(vertex)/d(c0, c1, c2)
    return float(np.sqrt(max(noise_var * grad @ quad.xtx_inv @ grad, 0.0)))
