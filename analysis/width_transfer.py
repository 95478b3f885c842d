"""Does lr_opt move with model width? The check that muP proxies exist for, against standard parametrisation.

Under muP the optimal (base) lr does not move with width; under standard parametrisation (SP) with Adam it
drifts, lr_opt ~ width^-1 for the hidden layers. For each parametrisation and each (tokens, batch_size) group
with lr_opt located at 3 or more widths, ``fit_power_law`` fits lr_opt = c * width**drift, its bootstrap
carrying each cell's own lr_opt draws (``find_optima``). The pooled drift of a parametrisation has one
intercept per group and a common slope: each group's ln lr_opt, ln width and ln lr_opt draws are centred on
their group's mean first, which removes the intercepts exactly, then the same fit runs on all groups at once.

A width is the ``d_model`` column where the table states it; else sqrt(n_params_non_embedding), proportional
to d_model at a fixed depth and shape (12 * n_layers * d_model**2), so it gives the same drift; else there is
no check.

>>> widths = width_transfer(table, schedule="wsd", n_boot=1000)
>>> widths.verdicts["mup"].text
'flat: lr_opt does not move with width (drift 0.01, 95% CI [-0.05, 0.07] covers 0)'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from powersweep.analysis.fit import CI_LEVEL, Interval, PowerLawFit, fit_power_law
from powersweep.analysis.optimum import find_optima, lr_points

MIN_WIDTHS = 3  # distinct widths with a located lr_opt a group needs for its drift
SP_DRIFT = -1.0  # lr_opt ~ width^-1: hidden layers under SP with Adam
GROUP = ("parametrisation", "tokens", "batch_size")
WIDTH_SOURCES = {
    "d_model": "d_model",
    "n_params_non_embedding": "sqrt(n_params_non_embedding), a width proxy at a fixed depth",
}
PARAMETRISATION_NAMES = {"mup": "muP", "sp": "SP", "unknown": "unstated parametrisation"}


@dataclass(frozen=True)
class Verdict:
    """Whether lr_opt moves with width under one parametrisation, from a drift and its 95% CI."""

    parametrisation: str
    drift: float
    ci: Interval
    scope: str  # which cells the drift was fitted on, in words

    @property
    def kind(self) -> str:
        """'drifts' (CI excludes 0), 'unclear' (covers 0 and SP's -1) or 'flat'."""
        if not self.ci.contains(0.0):
            return "drifts"
        return "unclear" if self.ci.contains(SP_DRIFT) else "flat"

    @property
    def warning(self) -> bool:
        """muP whose lr_opt moves with width: the proxies' law would not transfer to wider models."""
        return self.parametrisation == "mup" and self.kind == "drifts"

    @property
    def text(self) -> str:
        drift, low, high = (_number(v) for v in (self.drift, self.ci.low, self.ci.high))
        if self.kind == "drifts":
            return f"drifts: lr_opt ~ width^{drift} (95% CI [{low}, {high}] excludes 0)"
        if self.kind == "unclear":
            return (
                f"unclear: drift {drift}, 95% CI [{low}, {high}] covers both 0 and -1 (SP's lr_opt ~ "
                "width^-1): add widths, or lrs near the optima"
            )
        return f"flat: lr_opt does not move with width (drift {drift}, 95% CI [{low}, {high}] covers 0)"


@dataclass(frozen=True)
class WidthTransfer:
    """lr_opt against width per (parametrisation, tokens, batch_size); ``ok`` False (with a ``reason``) when
    no group has lr_opt located at ``MIN_WIDTHS`` widths."""

    width_source: str  # 'd_model' or 'n_params_non_embedding' (its square root is the width)
    cells: pd.DataFrame  # one row per (parametrisation, model, tokens, batch_size): width, lr_opt and its CI
    points: pd.DataFrame  # lr_points of every cell, with parametrisation and width: the loss-vs-lr curves
    groups: pd.DataFrame  # one row per group with a drift: drift, its CI, verdict kind
    fits: dict[tuple[str, float, int], PowerLawFit] = field(repr=False)  # (parametrisation, T, B) -> fit
    pooled: dict[str, PowerLawFit] = field(repr=False)  # per parametrisation: common slope over its groups
    verdicts: dict[str, Verdict]  # per parametrisation, from its pooled drift
    notes: tuple[str, ...]
    reason: str = ""

    @property
    def ok(self) -> bool:
        return not self.reason

    def figure_group(self, parametrisation: str) -> tuple[float, int] | None:
        """(tokens, batch_size) to draw: the largest T where every width has a located lr_opt (else the most
        widths), at the middle batch size among equals."""
        mine = self.cells[self.cells["parametrisation"].eq(parametrisation)]
        if mine.empty:
            return None
        n_widths = mine["width"].nunique()
        located = mine[mine["located"]].groupby(["tokens", "batch_size"])["width"].nunique()
        if located.empty:
            return None
        batches = sorted(mine["batch_size"].unique().tolist())
        middle = batches[len(batches) // 2]

        def key(item) -> tuple:
            (tokens, batch_size), n = item
            return n == n_widths, n, tokens, -abs(math.log(batch_size / middle))

        (tokens, batch_size), _ = max(located.items(), key=key)
        return float(tokens), int(batch_size)


def width_transfer(
    table: pd.DataFrame,
    *,
    schedule: str | None,
    half_width: int = 3,
    n_draws: int = 200,
    n_boot: int = 1000,
    seed: int = 0,
    include_flagged: bool = False,
) -> WidthTransfer | None:
    """The drift of lr_opt in width per parametrisation; None when the table states no width.

    ``table`` is the analysis table (``load_table``); each parametrisation's runs of ``schedule`` locate their
    own lr_opt (``find_optima`` with ``half_width``, ``n_draws`` and ``seed``). A cell's lr_opt counts when it
    is found and the cell is not flagged (or ``include_flagged``).
    """
    source = _width_source(table)
    rows = table[table["schedule"].eq(schedule)] if schedule is not None else table.iloc[:0]
    if source is None or rows.empty:
        return None
    widths, notes = _model_widths(rows, source)
    if source == "n_params_non_embedding":
        notes.insert(0, f"width is {WIDTH_SOURCES[source]}: the table has no d_model")
    options = {"schedule": schedule, "half_width": half_width, "n_draws": n_draws, "seed": seed}
    parts = [_cells(rows, p, widths, include_flagged, options) for p in _parametrisations(rows)]
    cells = pd.concat([c for c, _ in parts])
    points = pd.concat([p for _, p in parts], ignore_index=True)
    fits = _group_fits(cells, n_boot=n_boot, seed=seed)
    pooled = _pooled_fits(cells, fits, n_boot=n_boot, seed=seed)
    verdicts = {p: _verdict(p, fit, fits) for p, fit in pooled.items() if fit.ok}
    reason = (
        ""
        if verdicts
        else f"no (T, batch size) has lr_opt located at {MIN_WIDTHS} or more widths of one parametrisation"
    )
    return WidthTransfer(
        source,
        cells.reset_index(drop=True),
        points,
        _groups_table(fits),
        fits,
        pooled,
        verdicts,
        tuple(notes),
        reason,
    )


def _width_source(table: pd.DataFrame) -> str | None:
    """The first of WIDTH_SOURCES that some row states (older tables lack d_model, or hold null there)."""
    for column in WIDTH_SOURCES:
        if column in table and (pd.to_numeric(table[column], errors="coerce") > 0).any():
            return column
    return None


def _model_widths(rows: pd.DataFrame, source: str) -> tuple[pd.Series, list[str]]:
    """(parametrisation, model) -> width, and notes naming the models left out (no width, or several)."""
    values = pd.to_numeric(rows[source], errors="coerce").where(lambda v: v > 0)
    if source == "n_params_non_embedding":
        values = np.sqrt(values)
    stated = values.groupby([rows["parametrisation"], rows["model"].astype(str)]).agg(["min", "max"])
    several = stated[stated["min"] < stated["max"]]
    missing = stated[stated["min"].isna()]
    notes = [
        f"{len(bad)} model(s) left out of the transfer across widths, {why} (e.g. {bad.index[0][1]!r})"
        for bad, why in ((missing, f"without a {source}"), (several, f"with several {source} values"))
        if len(bad)
    ]
    return stated["min"].drop(several.index).dropna(), notes


def _parametrisations(rows: pd.DataFrame) -> list[str]:
    order = list(PARAMETRISATION_NAMES)
    return sorted(
        set(rows["parametrisation"]), key=lambda p: (order.index(p) if p in order else len(order), p)
    )


def _cells(
    rows: pd.DataFrame, parametrisation: str, widths: pd.Series, include_flagged: bool, options: dict
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One parametrisation's cells (lr_opt, its CI from the draws, width, located) and lr points."""
    mine = rows[rows["parametrisation"].eq(parametrisation)]
    cells = find_optima(mine, **options)
    width = cells["model"].astype(str).map(lambda m: widths.get((parametrisation, m), np.nan))
    cells = cells.assign(parametrisation=parametrisation, width=width.astype(float))
    cells = cells[np.isfinite(cells["width"])]
    found = np.isfinite(cells["lr_opt"]) & (cells["ok"].astype(bool) | include_flagged)
    low, high = _draw_interval(cells["ln_lr_opt_draws"])
    cells = cells.assign(located=found, lr_opt_low=low, lr_opt_high=high)
    points = lr_points(mine, schedule=options["schedule"])
    points = points.assign(
        parametrisation=parametrisation,
        width=points["model"].astype(str).map(lambda m: widths.get((parametrisation, m), np.nan)),
    )
    return cells.sort_values(["tokens", "batch_size", "width"]), points[np.isfinite(points["width"])]


def _draw_interval(draws: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile interval of lr_opt per cell from its ln lr_opt draws (NaN where there are none)."""
    tail = 100 * (1 - CI_LEVEL) / 2
    bounds = [
        np.exp(np.percentile(d, [tail, 100 - tail])) if d is not None and len(d) else (np.nan, np.nan)
        for d in draws
    ]
    pairs = np.array(bounds, dtype=float).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def _group_fits(cells: pd.DataFrame, *, n_boot: int, seed: int) -> dict[tuple[str, float, int], PowerLawFit]:
    located = cells[cells["located"].astype(bool)]
    fits = {}
    for i, (key, group) in enumerate(located.groupby(list(GROUP), sort=False)):
        if group["width"].nunique() >= MIN_WIDTHS:
            ln_width, ln_lr, draws = _logs(group)
            fits[(key[0], float(key[1]), int(key[2]))] = _fit(
                ln_width, ln_lr, draws, group["ln_lr_opt_se"], n_boot=n_boot, seed=seed + 1 + i
            )
    return fits


def _pooled_fits(cells: pd.DataFrame, fits: dict, *, n_boot: int, seed: int) -> dict[str, PowerLawFit]:
    """Per parametrisation: one common drift over its fitted groups, with an intercept of each group's own.

    Centring ln width, ln lr_opt and every column of the lr_opt draws on their group's means removes the
    intercepts, so a line through all groups at once has the common slope; each bootstrap replicate is
    centred as the estimate is."""
    pooled = {}
    for i, parametrisation in enumerate(dict.fromkeys(p for p, _, _ in fits)):
        keys = {(t, b) for p, t, b in fits if p == parametrisation}
        mine = cells[cells["located"].astype(bool) & cells["parametrisation"].eq(parametrisation)]
        mine = mine[[(t, b) in keys for t, b in zip(mine["tokens"], mine["batch_size"])]]
        codes = mine.groupby(["tokens", "batch_size"]).ngroup().to_numpy()
        logs = [_centred(values, codes) if values is not None else None for values in _logs(mine)]
        pooled[parametrisation] = _fit(*logs, mine["ln_lr_opt_se"], n_boot=n_boot, seed=seed + 1000 + i)
    return pooled


def _logs(cells: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """ln width (n,), ln lr_opt (n,) and the ln lr_opt draws (n, R) of the cells; None without draws."""
    rows = cells["ln_lr_opt_draws"].tolist()
    same = len({np.size(r) for r in rows}) == 1 and all(r is not None for r in rows)
    draws = np.stack(rows) if same else None
    return np.log(cells["width"].to_numpy(float)), np.log(cells["lr_opt"].to_numpy(float)), draws


def _centred(values: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``values`` (n,) or (n, R) less the mean of their group (``codes``, (n,)), column by column."""
    sums = np.zeros((codes.max() + 1, *values.shape[1:]))
    np.add.at(sums, codes, values)
    return values - (sums / np.bincount(codes).reshape(-1, *[1] * (values.ndim - 1)))[codes]


def _fit(ln_width, ln_lr, draws, se, *, n_boot: int, seed: int) -> PowerLawFit:
    """lr_opt = c * width**drift; ``draws`` (n, R) of ln lr_opt carry each cell's own error into the CI."""
    return fit_power_law(
        np.exp(ln_width), np.exp(ln_lr), se=se, n_boot=n_boot, seed=seed, holdout=False, draws=draws
    )


def _verdict(parametrisation: str, pooled: PowerLawFit, fits: dict) -> Verdict:
    keys = [(t, b) for p, t, b in fits if p == parametrisation]
    scope = (
        f"T = {keys[0][0]:.3g} tokens, batch size {keys[0][1]}"
        if len(keys) == 1
        else f"common drift of {len(keys)} (T, batch size) groups, each with its own intercept"
    )
    return Verdict(parametrisation, pooled.b, pooled.b_ci, scope)


def _groups_table(fits: dict[tuple[str, float, int], PowerLawFit]) -> pd.DataFrame:
    rows = [
        {
            "parametrisation": p,
            "tokens": t,
            "batch_size": b,
            "n_widths": fit.n_x,
            "drift": fit.b,
            "drift_low": fit.b_ci.low,
            "drift_high": fit.b_ci.high,
            "verdict": Verdict(p, fit.b, fit.b_ci, "").kind if fit.ok else "-",
            "reason": fit.reason,
        }
        for (p, t, b), fit in fits.items()
    ]
    return pd.DataFrame(
        rows, columns=[*GROUP, "n_widths", "drift", "drift_low", "drift_high", "verdict", "reason"]
    )


def _number(value: float) -> str:
    """-0.004 -> '0.00', never '-0.00'."""
    return f"{round(value, 2) + 0.0:.2f}"
