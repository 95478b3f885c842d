"""The optimal learning rate of each cell (model, tokens, batch_size), finer than the grid argmin.

Seeds of one lr are averaged first. A diverged run is worse than any finite loss: an lr where any
seed diverged can never be the optimum, and its loss is never averaged. Around the grid argmin a
bowl in ln(lr) with a curvature of its own on each side is fitted (``analysis.bowl``; a parabola's
vertex lands on the flatter, low-lr side of a real bowl); its vertex is the sub-grid estimate, and a
perturbation bootstrap of the window's losses gives its error. The vertex may lie up to two grid steps
from the argmin: on a shallow bowl noise moves the argmin a step off the optimum, and a vertex held to
the argmin's neighbours then cannot reach it (nor can its draws, so the interval misses it too). Cells
whose best lr is at an end of the grid, or next to a diverged lr, are flagged ``edge_low``/``edge_high`` and
marked not ``ok``; those with a single lr on one side of the argmin (the grid's end or a diverged lr two steps
away) ``one_side``, kept, with a wider error.

>>> cells = find_optima(table)
>>> cells[["model", "tokens", "batch_size", "lr_opt", "lr_opt_se", "flags"]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powersweep.analysis.bowl import MIN_POINTS, BowlFit, bowl_vertices, fit_bowl
from powersweep.analysis.errors import AnalysisError

CELL_KEYS = ("model", "tokens", "batch_size")
# Flags that keep a cell out of point fits: its optimum is not bracketed by finite losses.
BLOCKING_FLAGS = frozenset({"all_diverged", "too_few_points", "edge_low", "edge_high"})
CELL_COLUMNS = (
    *CELL_KEYS,
    "n_params",
    "lr_opt",
    "lr_opt_se",
    "ln_lr_opt_se",
    "lr_opt_grid",
    "loss_opt",
    "loss_opt_grid",
    "method",
    "curvature",
    "penalty_2x",
    "n_points",
    "n_finite",
    "n_diverged",
    "n_runs",
    "edge_low",
    "edge_high",
    "ok",
    "flags",
    "reason",
)
_LN2_SQUARED = math.log(2.0) ** 2
VERTEX_REACH = 2  # grid points either side of the argmin the bowl's vertex may move to


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
        raise AnalysisError(
            f"the table mixes schedules {names} whose optimal lr differ: "
            "choose one with schedule=NAME (--schedule NAME)"
        )
    return names[0] if names else None


def lr_points(table: pd.DataFrame, *, schedule: str | None = None) -> pd.DataFrame:
    """One row per (model, tokens, batch_size, lr): the mean loss over seeds, +inf if any seed diverged.

    Failed runs (status 'failed': the job broke, the lr is not to blame) are left out.
    Columns: the cell keys, lr, loss (nats/token), n_runs, n_diverged, n_params.
    """
    name = choose_schedule(table, schedule)
    runs = table[table["schedule"].eq(name) & ~table["status"].eq("failed")]
    frame = runs.assign(
        loss_ok=runs["loss_eval"].where(runs["status"].eq("ok")), diverged=runs["status"].eq("diverged")
    )
    points = (
        frame.groupby([*CELL_KEYS, "lr"], sort=True)
        .agg(
            loss=("loss_ok", "mean"),
            n_runs=("loss_ok", "size"),
            n_diverged=("diverged", "sum"),
            n_params=("n_params", "first"),
        )
        .reset_index()
    )
    points["loss"] = points["loss"].where(points["n_diverged"].eq(0), np.inf)
    return points


@dataclass(frozen=True)
class _Quadratic:
    """loss ~ c0 + c1*d + c2*d**2 with d = ln(lr) - ln(grid argmin), fitted on d in [low, high]."""

    coef: np.ndarray  # (3,)
    xtx_inv: np.ndarray  # (3, 3)
    design: np.ndarray  # (n, 3) Vandermonde rows of the window
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
    bowl: BowlFit | None  # the two-sided bowl, when the window holds MIN_POINTS points
    d: np.ndarray  # the window's ln(lr) - ln(grid argmin)
    vertex_range: tuple[float, float]  # where in d the bowl's vertex (and each of its draws) may lie
    flags: tuple[str, ...]
    reason: str


def find_optima(
    table: pd.DataFrame,
    *,
    schedule: str | None = None,
    half_width: int = 3,
    n_draws: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """One row per cell with lr_opt_grid, lr_opt, lr_opt_se, loss_opt, n_points, n_diverged and flags.

    Up to ``half_width`` grid points on each side of the argmin (fewer where a neighbour diverged) enter
    the estimate: a two-sided bowl (``method`` 'bowl', see ``analysis.bowl``) when the window holds four or
    more points (its vertex within ``VERTEX_REACH`` points of the argmin), else a parabola ('quadratic'),
    else the grid argmin.
    ``ln_lr_opt_draws`` holds ``n_draws`` bootstrap draws of ln(lr_opt): the losses of the window
    perturbed by the pooled noise and the estimator run again, so they carry the estimator's own error.
    ``lr_opt_se`` is in lr units, ``ln_lr_opt_se`` the standard deviation of the draws; ``curvature`` is
    d2(loss)/d(ln lr)^2 at the optimum (nats, the mean of both sides) and ``penalty_2x`` the loss (nats)
    of an lr off by a factor 2. ``ok`` is False for flagged cells, with a ``reason``.
    """
    if half_width < 1:
        raise AnalysisError(f"half_width={half_width}: must be at least 1 grid point on each side")
    points = lr_points(table, schedule=schedule) if len(table) else pd.DataFrame()
    if points.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in CELL_COLUMNS})
    bounds = _group_bounds(points)
    fits = [_fit_cell(points.iloc[s:e], half_width) for s, e in bounds]
    noise_var = _pooled_noise(fits)
    rng = np.random.default_rng(seed)
    rows = [_cell_row(fit, noise_var, n_draws, rng) for fit in fits]
    keys = points.iloc[[s for s, _ in bounds]][[*CELL_KEYS, "n_params"]].reset_index(drop=True)
    return pd.concat([keys, pd.DataFrame(rows)], axis=1)[[*CELL_COLUMNS, "ln_lr_opt_draws"]]


def _group_bounds(points: pd.DataFrame) -> list[tuple[int, int]]:
    codes = points.groupby(list(CELL_KEYS), sort=False).ngroup().to_numpy()
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    return list(zip(starts.tolist(), np.r_[starts[1:], len(codes)].tolist()))


def _fit_cell(cell: pd.DataFrame, half_width: int) -> _CellFit:
    lr, loss = cell["lr"].to_numpy(float), cell["loss"].to_numpy(float)
    finite, n_runs = np.isfinite(loss), int(cell["n_runs"].sum())
    empty = np.empty(0)
    if not finite.any():
        reason = f"all {len(lr)} lrs diverged: lower the lr grid"
        return _CellFit(lr, loss, n_runs, None, None, None, empty, (0.0, 0.0), ("all_diverged",), reason)
    best = int(np.argmin(np.where(finite, loss, np.inf)))
    flags, reasons = _edge_flags(lr, finite, best)
    if finite.sum() < 3:
        flags.append("too_few_points")
        reasons.append(f"only {int(finite.sum())} finite lr(s), need 3: add lrs around {lr[best]:.3g}")
    low, high = _window(finite, best, half_width)
    x = np.log(lr)
    d, y = x[low : high + 1] - x[best], loss[low : high + 1]  # centred on the argmin: well conditioned
    bowl = quad = None
    reach = d[max(best - low - VERTEX_REACH, 0)], d[min(best - low + VERTEX_REACH, len(d) - 1)]
    # One point on a side of the argmin (the grid's end is near) still takes the bowl: a parabola there puts
    # the vertex on the flat side of an asymmetric bowl, with an error too small to show it.
    if not flags and len(d) >= MIN_POINTS:
        bowl = fit_bowl(d, y, low=reach[0], high=reach[1])
        if not bowl.convex[0]:
            bowl = None
    if not flags and (bowl is None or bowl.dof == 0) and high - low >= 2:
        quad = _fit_quadratic(d, y)  # with a 4-point bowl, only for its degree of freedom in the pooled noise
        if not quad.accepted and bowl is None:
            flags.append("quadratic_rejected")  # not blocking: the grid argmin stands, with a wider error
    if not BLOCKING_FLAGS.intersection(flags) and min(best - low, high - best) == 1 < half_width:
        # not blocking: one lr on a side of the argmin sets that side's curvature alone
        flags.append("one_side")
    return _CellFit(lr, loss, n_runs, best, quad, bowl, d, reach, tuple(flags), "; ".join(reasons))


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
        reasons.append(
            f"the lr above the best one ({lr[best + 1]:.3g}) diverged: the optimum may sit at the edge"
        )
    return flags, reasons


def _window(finite: np.ndarray, best: int, half_width: int) -> tuple[int, int]:
    """Indices [low, high] of up to ``half_width`` finite neighbours on each side of the argmin."""
    low = high = best
    while low > 0 and best - low < half_width and finite[low - 1]:
        low -= 1
    while high < len(finite) - 1 and high - best < half_width and finite[high + 1]:
        high += 1
    return low, high


def _fit_quadratic(d: np.ndarray, y: np.ndarray) -> _Quadratic:
    design = np.vander(d, 3, increasing=True)
    xtx_inv = np.linalg.inv(design.T @ design)
    coef = xtx_inv @ design.T @ y
    rss = float(np.sum((y - design @ coef) ** 2))
    return _Quadratic(coef, xtx_inv, design, rss, len(d) - 3, float(d[0]), float(d[-1]))


def _pooled_noise(fits: list[_CellFit]) -> float | None:
    # One noise variance (nats**2, of a seed-mean loss) for all cells: one window leaves too few degrees of
    # freedom.
    rss = dof = 0.0
    for fit in fits:
        if fit.bowl is not None and fit.bowl.dof > 0:
            rss, dof = rss + float(fit.bowl.rss[0]), dof + fit.bowl.dof
        elif fit.quad is not None and fit.quad.accepted:
            rss, dof = rss + fit.quad.rss, dof + fit.quad.dof
    return rss / dof if dof else None


def _cell_row(fit: _CellFit, noise_var: float | None, n_draws: int, rng: np.random.Generator) -> dict:
    finite = np.isfinite(fit.loss)
    row = {
        "n_points": len(fit.lr),
        "n_finite": int(finite.sum()),
        "n_diverged": int((~finite).sum()),
        "n_runs": fit.n_runs,
        "edge_low": "edge_low" in fit.flags,
        "edge_high": "edge_high" in fit.flags,
        "ok": not BLOCKING_FLAGS.intersection(fit.flags),
        "flags": ";".join(fit.flags),
        "reason": fit.reason,
    }
    return row | (_no_optimum() if fit.best is None else _optimum(fit, noise_var, n_draws, rng))


def _no_optimum() -> dict:
    nan = float("nan")
    return {
        "lr_opt": nan,
        "lr_opt_se": nan,
        "ln_lr_opt_se": nan,
        "lr_opt_grid": nan,
        "loss_opt": nan,
        "loss_opt_grid": nan,
        "method": "none",
        "curvature": nan,
        "penalty_2x": nan,
        "ln_lr_opt_draws": None,
    }


def _optimum(fit: _CellFit, noise_var: float | None, n_draws: int, rng: np.random.Generator) -> dict:
    x, best = np.log(fit.lr), fit.best
    quad = fit.quad if fit.quad is not None and fit.quad.accepted else None
    step = _grid_step(x, best)
    if noise_var is not None and fit.bowl is not None:
        bowl = fit.bowl
        offset, loss_opt, curvature, method = (
            bowl.vertex[0],
            bowl.floor[0],
            bowl.k_low[0] + bowl.k_high[0],
            "bowl",
        )
        noisy = bowl.fitted + rng.normal(0.0, math.sqrt(noise_var), (len(fit.d), n_draws))
        draws = bowl_vertices(fit.d, noisy, low=fit.vertex_range[0], high=fit.vertex_range[1])
    elif noise_var is not None and quad is not None:
        c0, c1, c2 = quad.coef
        offset, loss_opt, curvature, method = quad.vertex, c0 - c1 * c1 / (4 * c2), 2 * c2, "quadratic"
        noisy = (quad.design @ quad.coef)[:, None] + rng.normal(
            0.0, math.sqrt(noise_var), (len(fit.d), n_draws)
        )
        draws = _quadratic_vertices(quad, noisy)
    else:
        # A grid argmin is off by up to half a step, uniformly.
        offset, loss_opt, curvature, method = 0.0, fit.loss[best], float("nan"), "grid"
        draws = rng.uniform(-step / 2, step / 2, n_draws)
    se = float(np.std(draws)) if n_draws > 1 else step / math.sqrt(12.0)
    ln_opt = x[best] + offset
    lr_opt = math.exp(ln_opt)
    return {
        "lr_opt": lr_opt,
        "lr_opt_se": lr_opt * se,
        "ln_lr_opt_se": se,
        "lr_opt_grid": fit.lr[best],
        "loss_opt": loss_opt,
        "loss_opt_grid": fit.loss[best],
        "method": method,
        "curvature": curvature,
        "penalty_2x": curvature / 2 * _LN2_SQUARED,
        "ln_lr_opt_draws": x[best] + draws,
    }


def _quadratic_vertices(quad: _Quadratic, noisy: np.ndarray) -> np.ndarray:
    """(R,) the vertex of each column's parabola, kept inside the window
    (a flat or concave draw: the argmin)."""
    c = quad.xtx_inv @ quad.design.T @ noisy  # (3, R)
    vertex = np.divide(-c[1], 2 * c[2], out=np.zeros(noisy.shape[1]), where=c[2] > 0)
    return np.clip(vertex, quad.low, quad.high)


def _grid_step(x: np.ndarray, best: int) -> float:
    low, high = max(best - 1, 0), min(best + 1, len(x) - 1)
    return (x[high] - x[low]) / max(high - low, 1)
