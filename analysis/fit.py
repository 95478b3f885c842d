"""Power-law fits y = a * x**b in log space, weighted, with cell-bootstrap confidence intervals.

``fit_power_law`` is the one fitting routine; ``fit_gamma`` applies it to the paper's
gamma = lr_opt / batch_size = a * T**b (Eq. 3-4), per model size and pooled, and ``paper_fit``
repeats the paper's own recipe for comparison (grid argmin, mean gamma of the 3 best batch sizes).
The bootstrap resamples points (cells) with one multinomial draw and solves the 2-parameter
weighted least squares in closed form for every resample at once.

>>> fits = fit_gamma(find_optima(table), top_k=3, n_boot=1000)
>>> fits.pooled.b, fits.pooled.b_ci   # the paper found gamma = 4.6 * T**-0.51
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.order import in_model_order, model_order

CI_LEVEL = 0.95
_MIN_BOOT = 20  # fewer usable resamples than this: fall back to the analytic interval


@dataclass(frozen=True)
class Interval:
    """A confidence interval [low, high]."""

    low: float
    high: float

    def contains(self, value: float) -> bool:
        return bool(self.low <= value <= self.high)

    def overlaps(self, other: Interval) -> bool:
        return bool(self.low <= other.high and other.low <= self.high)


@dataclass(frozen=True)
class Holdout:
    """How well a fit without the largest x predicts the points at the largest x."""

    x: float  # the held-out x (the largest T)
    ratio: float  # geometric mean of predicted / observed y there; 1 is perfect
    abs_log_error: float  # mean |ln(predicted / observed)|
    n_points: int


@dataclass(frozen=True)
class Band:
    """Pointwise confidence band of a fitted curve."""

    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class PowerLawFit:
    """y = a * x**b; ``ok`` is False (with a ``reason``) when the points could not support a fit."""

    a: float
    b: float
    a_ci: Interval
    b_ci: Interval
    x_ref: float  # weighted geometric mean of x: the pivot where the fit is best determined
    y_ref_ci: Interval  # CI of y at x_ref; much tighter than a_ci, which extrapolates to x = 1
    r2: float  # weighted, in log space
    n_points: int
    n_x: int  # distinct x values
    cov: np.ndarray  # (2, 2) covariance of (ln a, b), analytic
    ci_method: str  # "bootstrap" or "analytic"
    holdout: Holdout | None
    boot_ln_a: np.ndarray = field(repr=False)  # (n,) bootstrap samples of ln a
    boot_b: np.ndarray = field(repr=False)  # (n,) bootstrap samples of b, paired with boot_ln_a
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def predict(self, x: np.ndarray | float) -> np.ndarray:
        return self.a * np.asarray(x, dtype=float) ** self.b

    def band(self, x: np.ndarray | float, level: float = CI_LEVEL) -> Band:
        """Pointwise CI of the fitted y at ``x``, from the paired bootstrap samples when there are any."""
        lx = np.log(np.atleast_1d(np.asarray(x, dtype=float)))
        tail = 100 * (1 - level) / 2
        if len(self.boot_b) >= _MIN_BOOT:
            samples = self.boot_ln_a[:, None] + self.boot_b[:, None] * lx[None, :]  # (n_boot, len(x))
            low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
            return Band(np.exp(low), np.exp(high))
        var = self.cov[0, 0] + lx**2 * self.cov[1, 1] + 2 * lx * self.cov[0, 1]
        half = stats.norm.ppf(1 - tail / 100) * np.sqrt(np.maximum(var, 0.0))
        centre = math.log(self.a) + self.b * lx
        return Band(np.exp(centre - half), np.exp(centre + half))


def fit_power_law(
    x: np.ndarray,
    y: np.ndarray,
    *,
    se: np.ndarray | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    holdout: bool = True,
    draws: np.ndarray | None = None,
) -> PowerLawFit:
    """Fit y = a * x**b by weighted least squares of ln y on ln x.

    ``se`` is the standard error of ln y per point. The weights are 1 / (se**2 + tau**2), where the
    extra scatter tau**2 (method of moments) keeps one very precise point from dominating when the
    points scatter more than their errors say. CIs are bootstrap percentiles over resampled points,
    widened for small samples (analytic t-intervals when ``n_boot`` is 0). ``holdout`` refits
    without the largest x.

    ``draws`` (n points, R) are bootstrap draws of each point's ln y from its own estimator (e.g. the
    per-cell lr_opt draws of ``find_optima``). With them the bootstrap is parametric: each resample is
    the fitted line plus every point's draw minus its estimate plus the extra scatter tau, so the CIs
    carry the error of the estimator that made each point as well as the scatter about the line.
    """
    x, y, se, draws = _clean(x, y, se, draws)
    lx, ly = np.log(x), np.log(y)
    n_x = len(np.unique(lx))
    if n_x < 2:
        return _failed(len(x), n_x, f"needs points at 2 or more distinct x, got {n_x} from {len(x)} point(s)")
    weights = _weights(lx, ly, se)
    core = _weighted_line(lx, ly, weights)
    rng = np.random.default_rng(seed)
    if draws is not None and n_boot > 0 and draws.shape[1] >= _MIN_BOOT:
        boot = _draw_bootstrap(lx, ly, weights, core, draws[:, :n_boot], _tau2(lx, ly, se), rng)
        cis = _intervals(core, boot, len(x), widen=False)
    else:
        boot = _bootstrap(lx, ly, weights, core["x_ref"], n_boot, rng)
        cis = _intervals(core, boot, len(x))
    held = _holdout(x, y, se) if holdout else None
    return PowerLawFit(
        a=math.exp(core["ln_a"]),
        b=core["b"],
        a_ci=cis["a"],
        b_ci=cis["b"],
        x_ref=math.exp(core["x_ref"]),
        y_ref_ci=cis["y_ref"],
        r2=core["r2"],
        n_points=len(x),
        n_x=n_x,
        cov=core["cov"],
        ci_method=cis["method"],
        holdout=held,
        boot_ln_a=boot["ln_a"],
        boot_b=boot["b"],
    )


def _clean(x, y, se, draws=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape:
        raise AnalysisError(f"x has {x.size} values but y has {y.size}: give one y per x")
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if draws is not None:
        draws = np.asarray(draws, dtype=float).reshape(len(x), -1)
        keep &= np.isfinite(draws).all(axis=1)
        draws = draws[keep]
    if se is None:
        return x[keep], y[keep], None, draws
    se = np.asarray(se, dtype=float)[keep]
    good = np.isfinite(se) & (se > 0)
    fill = np.median(se[good]) if good.any() else 1.0  # an unknown error counts as a typical one
    return x[keep], y[keep], np.where(good, se, fill), draws


def _tau2(lx: np.ndarray, ly: np.ndarray, se: np.ndarray | None) -> float:
    """Scatter about the line beyond the points' own errors (method of moments), in (ln y)**2."""
    if se is None:
        return 0.0
    line = _weighted_line(lx, ly, np.ones_like(lx))
    return max(0.0, line["resid_var"] - float(np.mean(se**2)))


def _weights(lx: np.ndarray, ly: np.ndarray, se: np.ndarray | None) -> np.ndarray:
    if se is None:
        return np.ones_like(lx)
    return 1.0 / (se**2 + _tau2(lx, ly, se))


def _weighted_line(lx: np.ndarray, ly: np.ndarray, w: np.ndarray) -> dict:
    x_ref = float(np.sum(w * lx) / np.sum(w))
    d = lx - x_ref  # centred: intercept and slope are uncorrelated
    sw, sdd = float(np.sum(w)), float(np.sum(w * d * d))
    b = float(np.sum(w * d * ly) / sdd)
    c = float(np.sum(w * ly) / sw)  # ln y at x_ref
    resid = ly - c - b * d
    dof = len(lx) - 2
    s2 = float(np.sum(w * resid**2) / dof) if dof > 0 else float("nan")
    var_c, var_b = s2 / sw, s2 / sdd
    cov = np.array([[var_c + x_ref**2 * var_b, -x_ref * var_b], [-x_ref * var_b, var_b]])
    total = float(np.sum(w * (ly - c) ** 2))
    r2 = 1.0 - float(np.sum(w * resid**2)) / total if total > 0 else float("nan")
    return {
        "x_ref": x_ref,
        "b": b,
        "c": c,
        "ln_a": c - b * x_ref,
        "cov": cov,
        "var_c": var_c,
        "dof": dof,
        "r2": r2,
        "resid_var": float(np.mean(resid**2)),
    }


def _bootstrap(lx, ly, w, x_ref: float, n_boot: int, rng: np.random.Generator) -> dict:
    """All resamples at once:
    counts (n_boot, n) times per-point sums gives each resample's normal equations."""
    if n_boot <= 0:
        return {"ln_a": np.empty(0), "b": np.empty(0), "c": np.empty(0)}
    n = len(lx)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(float)  # (n_boot, n)
    d = lx - x_ref
    sums = counts @ np.column_stack([w, w * d, w * ly, w * d * d, w * d * ly])  # (n_boot, 5)
    sw, sd, sy, sdd, sdy = sums.T
    det = sw * sdd - sd * sd
    good = det > 1e-9 * sw * sw  # a resample with a single distinct x has no slope
    with np.errstate(divide="ignore", invalid="ignore"):
        b = (sw * sdy - sd * sy) / det
        c = (sy - b * sd) / sw
        ln_a = c - b * x_ref  # inf - inf where det is 0: those resamples are dropped below
    return {"ln_a": ln_a[good], "b": b[good], "c": c[good]}


def _draw_bootstrap(lx, ly, w, core: dict, draws: np.ndarray, tau2: float, rng: np.random.Generator) -> dict:
    """Resample y as line + (draw - estimate) + N(0, tau2)
    for every column of ``draws`` (n, R), refit each."""
    d = lx - core["x_ref"]
    line = core["c"] + core["b"] * d
    ys = line[:, None] + (draws - ly[:, None]) + math.sqrt(tau2) * rng.standard_normal(draws.shape)  # (n, R)
    sw, sdd = float(np.sum(w)), float(np.sum(w * d * d))
    b = (w * d) @ ys / sdd  # d is centred under w: slope and level separate
    c = w @ ys / sw
    return {"ln_a": c - b * core["x_ref"], "b": b, "c": c}


def _intervals(core: dict, boot: dict, n: int, *, widen: bool = True) -> dict:
    tail = 100 * (1 - CI_LEVEL) / 2
    if len(boot["b"]) >= _MIN_BOOT:
        # Percentile intervals from resampled points run narrow when the points are few; widen them about
        # the estimate by the small-sample factor sqrt(n / (n - 2)) * t(n - 2) / z (1.1 at 24 cells).
        q = 1 - tail / 100
        widen = math.sqrt(n / (n - 2)) * stats.t.ppf(q, n - 2) / stats.norm.ppf(q) if widen and n > 2 else 1.0

        def pct(values, centre):
            low, high = np.percentile(values, [tail, 100 - tail])
            return float(centre + widen * (low - centre)), float(centre + widen * (high - centre))

        (a0, a1), (b0, b1) = pct(boot["ln_a"], core["ln_a"]), pct(boot["b"], core["b"])
        c0, c1 = pct(boot["c"], core["c"])
        return {
            "a": Interval(math.exp(a0), math.exp(a1)),
            "b": Interval(b0, b1),
            "y_ref": Interval(math.exp(c0), math.exp(c1)),
            "method": "bootstrap",
        }
    t = float(stats.t.ppf(1 - tail / 100, core["dof"])) if core["dof"] > 0 else float("nan")
    half_a, half_b, half_c = (
        t * math.sqrt(max(v, 0.0)) for v in (core["cov"][0, 0], core["cov"][1, 1], core["var_c"])
    )
    return {
        "a": Interval(math.exp(core["ln_a"] - half_a), math.exp(core["ln_a"] + half_a)),
        "b": Interval(core["b"] - half_b, core["b"] + half_b),
        "y_ref": Interval(math.exp(core["c"] - half_c), math.exp(core["c"] + half_c)),
        "method": "analytic",
    }


def _holdout(x: np.ndarray, y: np.ndarray, se: np.ndarray | None) -> Holdout | None:
    top = x.max()
    train = x < top
    if len(np.unique(x[train])) < 2:
        return None
    lx, ly = np.log(x), np.log(y)
    line = _weighted_line(
        lx[train], ly[train], _weights(lx[train], ly[train], None if se is None else se[train])
    )
    err = line["ln_a"] + line["b"] * lx[~train] - ly[~train]  # ln(predicted / observed)
    return Holdout(
        float(top), math.exp(float(np.mean(err))), float(np.mean(np.abs(err))), int((~train).sum())
    )


def _failed(n: int, n_x: int, reason: str) -> PowerLawFit:
    nan, empty = float("nan"), np.empty(0)
    return PowerLawFit(
        nan,
        nan,
        Interval(nan, nan),
        Interval(nan, nan),
        nan,
        Interval(nan, nan),
        nan,
        n,
        n_x,
        np.full((2, 2), nan),
        "none",
        None,
        empty,
        empty,
        reason,
    )


@dataclass(frozen=True)
class GammaFits:
    """gamma = lr_opt / batch_size = a * T**b:
    pooled over model sizes, per model size, and the paper's recipe."""

    pooled: PowerLawFit
    per_model: dict[str, PowerLawFit]
    paper: PowerLawFit
    cells: pd.DataFrame  # every cell, with gamma, rank, top_k and used columns
    top_k: int


def select_cells(cells: pd.DataFrame, *, top_k: int = 3, include_flagged: bool = False) -> pd.DataFrame:
    """Add gamma (lr per sequence), rank (by loss within (model, tokens)), top_k and used columns.

    As in the paper, only the ``top_k`` batch sizes with the lowest loss of each (model, T) are
    kept; flagged cells (edges, too few points) are then left out unless ``include_flagged``.
    """
    if top_k < 1:
        raise AnalysisError(f"top_k={top_k}: must keep at least 1 batch size per (model, tokens)")
    out = cells.copy()
    out["gamma"] = out["lr_opt"] / out["batch_size"]
    loss = out["loss_opt"].where(np.isfinite(out["lr_opt"]))
    out["rank"] = loss.groupby([out["model"], out["tokens"]]).rank(method="first")
    out["top_k"] = out["rank"].le(top_k)
    usable = np.isfinite(out["lr_opt"]) & (out["ok"].astype(bool) | include_flagged)
    out["used"] = out["top_k"] & usable
    return out


def fit_gamma(
    cells: pd.DataFrame,
    *,
    top_k: int = 3,
    n_boot: int = 1000,
    seed: int = 0,
    include_flagged: bool = False,
) -> GammaFits:
    """Fit gamma = a * T**b on the kept cells, weighted by the lr_opt standard errors.

    Returns the pooled fit, one fit per model size and the paper's recipe, each with bootstrap
    CIs over resampled cells and a leave-the-largest-T-out prediction error.
    """
    chosen = select_cells(cells, top_k=top_k, include_flagged=include_flagged)
    used = chosen[chosen["used"]]

    def one(frame: pd.DataFrame, offset: int) -> PowerLawFit:
        return fit_power_law(
            frame["tokens"],
            frame["gamma"],
            se=frame["ln_lr_opt_se"],
            n_boot=n_boot,
            seed=seed + offset,
            draws=gamma_draws(frame),
        )

    per_model = {m: one(used[used["model"].eq(m)], i + 1) for i, m in enumerate(model_order(used))}
    pooled = one(used, 0)
    if used.empty:
        pooled = replace(
            pooled,
            reason=f"no usable cell among {len(cells)}: every top-{top_k} cell is flagged "
            "(see the flags and reason columns of cells.csv)",
        )
    paper = paper_fit(cells, top_k=top_k, n_boot=n_boot, seed=seed)
    # rows moved after the fits: same numbers
    return GammaFits(pooled, per_model, paper, in_model_order(chosen), top_k)


def gamma_draws(cells: pd.DataFrame) -> np.ndarray | None:
    """(cells, R) draws of ln gamma from the per-cell lr_opt draws; None when a cell has none."""
    if "ln_lr_opt_draws" not in cells or not len(cells):
        return None
    rows = cells["ln_lr_opt_draws"].tolist()
    if any(r is None or np.ndim(r) != 1 for r in rows) or len({len(r) for r in rows}) != 1:
        return None
    return np.stack(rows) - np.log(cells["batch_size"].to_numpy(float))[:, None]


def paper_fit(cells: pd.DataFrame, *, top_k: int = 3, n_boot: int = 1000, seed: int = 0) -> PowerLawFit:
    """The paper's recipe: grid argmin per cell, mean gamma of the ``top_k`` best batch sizes per
    (model, T), then an unweighted least-squares line in log-log space over those means."""
    grid = cells.assign(lr_opt=cells["lr_opt_grid"], loss_opt=cells["loss_opt_grid"], ok=True)
    chosen = select_cells(grid, top_k=top_k, include_flagged=True)
    means = chosen[chosen["used"]].groupby(["model", "tokens"])["gamma"].mean().reset_index()
    return fit_power_law(means["tokens"], means["gamma"], n_boot=n_boot, seed=seed + 1000)


@dataclass(frozen=True)
class Transfer:
    """Do the per-model-size fits agree? Compared on b and on gamma at a common T (the pooled pivot)."""

    table: pd.DataFrame  # one row per model size, then 'pooled'
    tokens_ref: float
    b_agree: bool  # every pair of per-model b intervals overlaps
    gamma_agree: bool  # every pair of per-model gamma(tokens_ref) intervals overlaps


def transfer(fits: GammaFits) -> Transfer:
    """Per-model (a, b) with CIs side by side, and whether their intervals overlap.

    a alone is a poor yardstick: it is gamma at T = 1 token, far outside the data, and strongly
    anti-correlated with b. gamma at the pooled fit's pivot T is compared instead.
    """
    t_ref = fits.pooled.x_ref if fits.pooled.ok else float("nan")
    rows = [
        _transfer_row(name, fit, t_ref) for name, fit in [*fits.per_model.items(), ("pooled", fits.pooled)]
    ]
    table = pd.DataFrame(rows)
    models = [f for f in fits.per_model.values() if f.ok]
    b_agree = _all_overlap([f.b_ci for f in models])
    g_rows = table[(table["model"] != "pooled") & np.isfinite(table["b"])]
    gamma_agree = _all_overlap(
        [Interval(lo, hi) for lo, hi in zip(g_rows["gamma_ref_low"], g_rows["gamma_ref_high"])]
    )
    return Transfer(table, t_ref, b_agree, gamma_agree)


def _transfer_row(name: str, fit: PowerLawFit, t_ref: float) -> dict:
    ok = fit.ok and np.isfinite(t_ref)
    band = fit.band([t_ref]) if ok else Band(np.array([np.nan]), np.array([np.nan]))
    return {
        "model": name,
        "n_cells": fit.n_points,
        "a": fit.a,
        "a_low": fit.a_ci.low,
        "a_high": fit.a_ci.high,
        "b": fit.b,
        "b_low": fit.b_ci.low,
        "b_high": fit.b_ci.high,
        "gamma_ref": float(fit.predict(t_ref)) if ok else np.nan,
        "gamma_ref_low": float(band.low[0]),
        "gamma_ref_high": float(band.high[0]),
        "r2": fit.r2,
        "reason": fit.reason,
    }


def _all_overlap(intervals: list[Interval]) -> bool:
    return all(p.overlaps(q) for i, p in enumerate(intervals) for q in intervals[i + 1 :])
