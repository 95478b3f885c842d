"""Results of the Power-scheduler (a, b) search (the paper's Table 3 and Fig. 5-6).

Power runs (schedule == 'power') use lr(n) = min(lr_max, batch_size * a * n**b). For each
(model, tokens, batch_size) group, a quadratic surface in (ln a, b) is fitted to the loss of the
60% of (a, b) points with the lowest loss. Its minimum over the searched box is the best (a, b):
the interior vertex when the surface is convex there, else the lowest point of the box boundary
(the paper finds the loss flat in a, so the surface often is too). Groups with fewer than 6
distinct (a, b) fall back to the grid argmin. The overall best (a, b) minimises the sum of all
groups' surfaces. CIs come from a bootstrap over runs within each group, all resamples at once.

>>> search = power_search(table, n_boot=1000)
>>> search.overall.b, search.overall.b_ci     # the paper chose a = 4, b = -0.51
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from powersweep.analysis.fit import Interval
from powersweep.analysis.order import in_model_order, model_order

GROUP_KEYS = ("model", "tokens", "batch_size")
_TAIL = 2.5  # percent in each tail of a 95% interval
# Share of each group's (a, b) points, lowest loss first, that the surface is fitted to: far from the
# minimum the loss is not quadratic (e.g. where lr_max clips the schedule) and would bias the vertex.
SURFACE_QUANTILE = 0.6


@dataclass(frozen=True)
class BestAB:
    """The best Power-scheduler coefficients with 95% CIs."""

    a: float
    b: float
    a_ci: Interval
    b_ci: Interval
    method: (
        str  # "surface" (interior minimum), "surface_edge" (on the searched box's edge) or "grid" (best run)
    )
    n_runs: int


@dataclass(frozen=True)
class PowerSearch:
    """The power runs, the best (a, b) per group and overall."""

    runs: pd.DataFrame  # power rows, with ``finite`` and ``delta_loss`` (loss above the group's best, nats)
    per_group: pd.DataFrame  # one row per group: grid best, surface best, CIs, method
    overall: BestAB


@dataclass(frozen=True)
class _Surface:
    """loss ~ c . [1, u, v, u*u, u*v, v*v] with u = ln a - u0, v = b - v0 (a common centre)."""

    coef: np.ndarray  # (6,) the fit; (n_boot, 6) bootstrap resamples
    boot: np.ndarray
    low: np.ndarray  # (2,) corner of the searched box in (u, v)
    high: np.ndarray


def power_search(table: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0) -> PowerSearch | None:
    """Summarise the (a, b) search, or return None when the table has no power runs."""
    runs = table[table["schedule"].eq("power") & ~table["status"].eq("failed")].copy()
    if runs.empty:
        return None
    runs["finite"] = runs["status"].eq("ok") & np.isfinite(runs["loss_eval"])
    best = runs["loss_eval"].where(runs["finite"]).groupby([runs[k] for k in GROUP_KEYS]).transform("min")
    runs["delta_loss"] = runs["loss_eval"].where(runs["finite"]) - best
    centre = np.array([np.log(runs["power_a"]).mean(), runs["power_b"].mean()])
    rng = np.random.default_rng(seed)
    rows, surfaces = [], []
    for key, group in runs.groupby(list(GROUP_KEYS), sort=True):
        surface = _fit_surface(group[group["finite"]], centre, n_boot, rng)
        rows.append(dict(zip(GROUP_KEYS, key)) | _group_row(group, surface, centre))
        surfaces.append(surface)
    per_group = in_model_order(pd.DataFrame(rows), model_order(runs))  # after the draws: the same numbers
    return PowerSearch(runs, per_group, _overall(runs, [s for s in surfaces if s is not None], centre))


def _features(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.column_stack([np.ones_like(u), u, v, u * u, u * v, v * v])


def _fit_surface(
    group: pd.DataFrame, centre: np.ndarray, n_boot: int, rng: np.random.Generator
) -> _Surface | None:
    mean_delta = group.groupby(["power_a", "power_b"])["delta_loss"].transform("mean")
    group = group[mean_delta <= mean_delta.quantile(SURFACE_QUANTILE)]
    u = np.log(group["power_a"].to_numpy(float)) - centre[0]
    v = group["power_b"].to_numpy(float) - centre[1]
    distinct = len(set(zip(u.round(12), v.round(12))))
    if distinct < 6 or len(np.unique(u)) < 3 or len(np.unique(v)) < 3:
        return None  # six coefficients need six distinct (a, b), three per axis for the curvature
    x, y = _features(u, v), group["loss_eval"].to_numpy(float)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    box = (np.array([u.min(), v.min()]), np.array([u.max(), v.max()]))
    return _Surface(coef, _boot_surfaces(x, y, n_boot, rng), *box)


def _boot_surfaces(x: np.ndarray, y: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Refit the surface on every resample at once: counts (n_boot, n) weight the normal equations."""
    if n_boot <= 0:
        return np.empty((0, x.shape[1]))
    n = len(y)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)
    k = x.shape[1]
    xtx = (counts @ (x[:, :, None] * x[:, None, :]).reshape(n, k * k)).reshape(-1, k, k)  # (n_boot, 6, 6)
    xty = counts @ (x * y[:, None])  # (n_boot, 6)
    # keeps rank-poor resamples solvable
    ridge = 1e-10 * np.trace(xtx, axis1=1, axis2=2)[:, None, None] * np.eye(k)
    coef = np.linalg.solve(xtx + ridge, xty[..., None])[..., 0]
    eig = np.linalg.eigvalsh(xtx)  # ascending, per resample
    return coef[eig[:, 0] > 1e-9 * eig[:, -1]]


def _quadratic(coef: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Surfaces (n, 6) evaluated at candidate points u, v of shape (n, k)."""
    c = [coef[:, i : i + 1] for i in range(6)]
    return c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v


def _edge_argmin(quad: np.ndarray, lin: np.ndarray, low: float, high: float) -> np.ndarray:
    """Minimiser over [low, high] of quad*t**2 + lin*t, per surface (n,)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = np.clip(-lin / (2 * quad), low, high)
    ends = np.where(quad * low * low + lin * low <= quad * high * high + lin * high, low, high)
    best_vertex = (quad > 0) & (quad * vertex * vertex + lin * vertex <= quad * ends * ends + lin * ends)
    return np.where(best_vertex, vertex, ends)


def _minimum(coef: np.ndarray, low: np.ndarray, high: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Minima (n, 2) in (u, v) of the surfaces ``coef`` (n, 6) over the searched box,
    and whether each is interior.

    An ill-determined direction (the paper's flat a) gives a saddle or a far-away vertex; the
    minimum on the box boundary then says "anywhere along this edge", which the CIs show.
    """
    coef = np.atleast_2d(coef)
    c1, c2, c3, c4, c5 = (coef[:, i] for i in range(1, 6))
    det = 4 * c3 * c5 - c4 * c4
    convex = (c3 > 0) & (det > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        u0, v0 = (c4 * c2 - 2 * c5 * c1) / det, (c4 * c1 - 2 * c3 * c2) / det  # stationary point
    inside = convex & (u0 >= low[0]) & (u0 <= high[0]) & (v0 >= low[1]) & (v0 <= high[1])
    us, vs = [np.where(inside, u0, low[0])], [np.where(inside, v0, low[1])]
    for u in (low[0], high[0]):  # edges with u fixed: minimise over v
        us.append(np.full_like(c1, u))
        vs.append(_edge_argmin(c5, c2 + c4 * u, low[1], high[1]))
    for v in (low[1], high[1]):  # edges with v fixed: minimise over u
        vs.append(np.full_like(c1, v))
        us.append(_edge_argmin(c3, c1 + c4 * v, low[0], high[0]))
    u, v = np.column_stack(us), np.column_stack(vs)  # (n, 5) candidates
    values = np.where(np.column_stack([inside] + [np.ones_like(inside)] * 4), _quadratic(coef, u, v), np.inf)
    pick = np.argmin(values, axis=1)
    rows = np.arange(len(coef))
    return np.column_stack([u[rows, pick], v[rows, pick]]), inside & (pick == 0)


def _group_row(group: pd.DataFrame, surface: _Surface | None, centre: np.ndarray) -> dict:
    finite = group[group["finite"]]
    row = {"n_runs": len(group), "n_diverged": int((~group["finite"]).sum())}
    if finite.empty:
        return row | _no_best()
    top = finite.loc[finite["loss_eval"].idxmin()]
    row |= {
        "a_grid": float(top["power_a"]),
        "b_grid": float(top["power_b"]),
        "loss_grid": float(top["loss_eval"]),
    }
    best = _best_ab(surface, centre, row["a_grid"], row["b_grid"], len(group))
    return row | {
        "a": best.a,
        "a_low": best.a_ci.low,
        "a_high": best.a_ci.high,
        "b": best.b,
        "b_low": best.b_ci.low,
        "b_high": best.b_ci.high,
        "method": best.method,
    }


def _no_best() -> dict:
    nan = float("nan")
    return {
        "a_grid": nan,
        "b_grid": nan,
        "loss_grid": nan,
        "a": nan,
        "a_low": nan,
        "a_high": nan,
        "b": nan,
        "b_low": nan,
        "b_high": nan,
        "method": "none",
    }


def _best_ab(
    surface: _Surface | None, centre: np.ndarray, a_grid: float, b_grid: float, n_runs: int
) -> BestAB:
    if surface is None:
        nan = Interval(float("nan"), float("nan"))
        return BestAB(a_grid, b_grid, nan, nan, "grid", n_runs)
    point, interior = _minimum(surface.coef, surface.low, surface.high)
    a_ci, b_ci = _boot_intervals(surface, centre)
    method = "surface" if interior[0] else "surface_edge"
    return BestAB(
        math.exp(point[0, 0] + centre[0]), float(point[0, 1] + centre[1]), a_ci, b_ci, method, n_runs
    )


def _boot_intervals(surface: _Surface, centre: np.ndarray) -> tuple[Interval, Interval]:
    if len(surface.boot) < 20:  # too few usable resamples for percentiles
        nan = float("nan")
        return Interval(nan, nan), Interval(nan, nan)
    points, _ = _minimum(surface.boot, surface.low, surface.high)
    ln_a = np.percentile(points[:, 0] + centre[0], [_TAIL, 100 - _TAIL])
    b = np.percentile(points[:, 1] + centre[1], [_TAIL, 100 - _TAIL])
    return Interval(*np.exp(ln_a).tolist()), Interval(*b.tolist())


def _overall(runs: pd.DataFrame, surfaces: list[_Surface], centre: np.ndarray) -> BestAB:
    finite = runs[runs["finite"]]
    # The grid fallback: the (a, b) with the lowest mean loss above each group's best.
    by_ab = finite.groupby(["power_a", "power_b"])["delta_loss"].mean()
    a_grid, b_grid = by_ab.idxmin() if len(by_ab) else (float("nan"), float("nan"))
    if not surfaces:
        return _best_ab(None, centre, float(a_grid), float(b_grid), len(runs))
    boot_n = min(len(s.boot) for s in surfaces)
    total = _Surface(
        sum(s.coef for s in surfaces),
        sum(s.boot[:boot_n] for s in surfaces),
        np.max([s.low for s in surfaces], axis=0),
        np.min([s.high for s in surfaces], axis=0),
    )
    return _best_ab(total, centre, float(a_grid), float(b_grid), len(runs))
