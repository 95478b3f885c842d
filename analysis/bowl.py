"""The minimum of one loss bowl in ln(lr), with a curvature of its own on each side.

Loss bowls in ln(lr) are not symmetric: past the optimum the loss climbs faster than below it. A
parabola through such a bowl puts its vertex on the flatter (low-lr) side, a bias that shrinks with
nothing but a narrower window. The bowl here is two half-parabolas that meet at their common minimum m:

    loss(d) = floor + k_low * min(d - m, 0)**2 + k_high * max(d - m, 0)**2

For a fixed m the model is linear in (floor, k_low, k_high), so m is found by profiling the residual sum
of squares over a grid of candidates (then refined by a parabola through the best three). Every column
of ``y`` is fitted at once, which makes a perturbation bootstrap of the estimator cheap.

>>> fit = fit_bowl(d, loss)            # d: ln(lr) - ln(grid argmin), sorted; loss: (n,) or (n, R)
>>> fit.vertex                         # ln(lr_opt) - ln(grid argmin), one per column
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_POINTS = 4  # four coefficients (floor, k_low, k_high, m); the noise level comes from other cells
_CANDIDATES = 81


@dataclass(frozen=True)
class BowlFit:
    """The fitted bowl of every column of ``y``; arrays have one entry per column."""

    vertex: np.ndarray  # (R,) m: ln(lr_opt) relative to the d origin
    floor: np.ndarray  # (R,) loss at the vertex (nats/token)
    k_low: np.ndarray  # (R,) nats per (ln lr)**2 below the vertex
    k_high: np.ndarray  # (R,) nats per (ln lr)**2 above it
    fitted: np.ndarray  # (n, R) the bowl at each d
    rss: np.ndarray  # (R,) residual sum of squares
    dof: int  # points minus 4

    @property
    def convex(self) -> np.ndarray:
        """(R,) both sides curve upwards: the vertex is a minimum."""
        return (self.k_low > 0) & (self.k_high > 0)


def fit_bowl(d: np.ndarray, y: np.ndarray, *, low: float | None = None, high: float | None = None) -> BowlFit:
    """Fit the two-sided bowl to each column of ``y`` (n points, sorted ``d``);
    the vertex stays in [low, high].

    The default range, from the second to the second-last point, leaves each side at least two points to
    set its curvature.
    """
    d = np.asarray(d, dtype=float)
    y2 = np.asarray(y, dtype=float).reshape(len(d), -1)  # (n, R)
    vertex = bowl_vertices(d, y2, low=low, high=high)
    coef, fitted = _solve(d, y2, vertex)
    resid = np.sum((y2 - fitted) ** 2, axis=0)
    return BowlFit(vertex, coef[0], coef[1], coef[2], fitted, resid, len(d) - 4)


def bowl_vertices(
    d: np.ndarray, y: np.ndarray, *, low: float | None = None, high: float | None = None
) -> np.ndarray:
    """Only the vertex of each column's bowl (what a bootstrap of lr_opt needs): (R,)."""
    d = np.asarray(d, dtype=float)
    if len(d) < MIN_POINTS:
        raise ValueError(f"fit_bowl needs {MIN_POINTS} points, got {len(d)}")
    y2 = np.asarray(y, dtype=float).reshape(len(d), -1)
    grid = np.linspace(d[1] if low is None else low, d[-2] if high is None else high, _CANDIDATES)  # (G,)
    return _refine(grid, _profile(d, y2, grid))


def _design(d: np.ndarray, m: np.ndarray) -> np.ndarray:
    """(len(m), n, 3): columns 1, (d - m)**2 below m, (d - m)**2 above m."""
    u = d[None, :] - np.asarray(m, dtype=float)[:, None]
    below, above = np.minimum(u, 0.0) ** 2, np.maximum(u, 0.0) ** 2
    return np.stack([np.ones_like(u), below, above], axis=-1)


def _profile(d: np.ndarray, y: np.ndarray, grid: np.ndarray) -> np.ndarray:
    design = _design(d, grid)  # (G, n, 3)
    hat = design @ _left_inverse(design)  # (G, n, n): the projection onto each candidate's columns
    resid = y[None, :, :] - hat @ y[None, :, :]  # (G, n, R)
    return np.einsum("gnr,gnr->gr", resid, resid)  # (G, R)


def _left_inverse(design: np.ndarray) -> np.ndarray:
    """(..., 3, n): (X'X)^-1 X' of each stacked design;
    a column of zeros (no point on a side) gets no weight."""
    xtx = np.swapaxes(design, -1, -2) @ design
    return np.linalg.pinv(xtx, hermitian=True) @ np.swapaxes(design, -1, -2)


def _refine(grid: np.ndarray, rss: np.ndarray) -> np.ndarray:
    """The best candidate of each column, moved to the minimum of a parabola through it and its neighbours."""
    j = np.clip(np.argmin(rss, axis=0), 1, len(grid) - 2)  # (R,)
    cols = np.arange(rss.shape[1])
    left, mid, right = rss[j - 1, cols], rss[j, cols], rss[j + 1, cols]
    bend = left - 2 * mid + right
    step = grid[1] - grid[0]
    shift = np.divide(left - right, 2 * bend, out=np.zeros_like(bend), where=bend > 0)
    return np.clip(grid[j] + np.clip(shift, -1.0, 1.0) * step, grid[0], grid[-1])


def _solve(d: np.ndarray, y: np.ndarray, vertex: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(3, R) coefficients and (n, R) fitted values with each column's own vertex."""
    design = _design(d, vertex)  # (R, n, 3)
    coef = np.einsum("rkn,nr->kr", _left_inverse(design), y)  # (3, R)
    fitted = np.einsum("rnk,kr->nr", design, coef)
    return coef, fitted
