"""Values that differ only by rounding are one value:
a model's token budget, a batch size converted from tokens.

A table merged from two versions of a sweep may state one nominal budget as T = 1.983906e9 in one and
1.98443e9 in the other (0.03% apart). Analysed apart, each holds half the lrs, its bowl is cut short and
flagged, and the fitted exponent moves. Within a relative ``tolerance`` they are one value, the median of the
distinct values (so it does not depend on how many runs each version had). Groups form in sorted order from
the smallest value: a group takes every value within the tolerance of its smallest, so no group spans more
than the tolerance, and a chain a ~ b ~ c whose ends are further apart splits.

>>> tolerance_groups([1.98443e9, 1.983906e9, 4e9], 0.01)
[(1983906000.0, 1984430000.0), (4000000000.0,)]
>>> merged, merges = merge_close(table, "tokens", by=("model",), tolerance=0.01)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.order import model_order

# relative: budgets of one grid are 1.25x or more apart, rounding moves them far less
DEFAULT_TOLERANCE = 0.01
# Budgets merge per model, across its batch sizes: a grid's budget is one T for every batch size (steps x
# batch x seq_len rounds differently per batch size), and the fits group cells by (model, T) (top-k batch
# sizes, Bc(T)).
BUDGET_GROUP = ("model",)
MAX_NAMED = 4  # values named in one note; more are given as their count and range
MAX_NOTES = 10  # merge notes named one by one; a table whose every budget jitters gets one line for the rest


@dataclass(frozen=True)
class Merge:
    """Distinct values of ``column`` within the tolerance of each other, analysed as one ``value``."""

    column: str
    values: tuple[float, ...]  # ascending, as the table gave them
    value: float  # what the rows now hold: the median of ``values``
    where: dict  # the group the values belong to, e.g. {"model": "36M"} (and the batch sizes of its rows)


def check_tolerance(tolerance: float) -> float:
    """``tolerance`` as a float;
    AnalysisError for a negative, infinite or non-numeric one, or one of 1 or more."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or math.isnan(tolerance):
        raise AnalysisError(
            f"--tokens-tolerance {tolerance!r}: must be a number >= 0 (a relative difference, e.g. 0.01)"
        )
    if tolerance < 0:
        raise AnalysisError(
            f"--tokens-tolerance {tolerance:g}: must be >= 0 (a relative difference, e.g. 0.01)"
        )
    if tolerance >= 1:  # 1 would merge budgets 2x apart: likely a percentage
        raise AnalysisError(
            f"--tokens-tolerance {tolerance:g}: must be below 1 (a relative difference: 0.01 is 1 percent)"
        )
    return float(tolerance)


def tolerance_groups(values: Iterable[float], tolerance: float) -> list[tuple[float, ...]]:
    """The distinct ``values``, ascending, in groups: each takes every value up to (1 + tolerance) times its
    smallest. With ``tolerance`` 0 every distinct value is a group of its own."""
    groups: list[list[float]] = []
    for value in sorted(set(float(v) for v in values)):
        if groups and value <= groups[-1][0] * (1 + tolerance):
            groups[-1].append(value)
        else:
            groups.append([value])
    return [tuple(g) for g in groups]


def merge_close(
    frame: pd.DataFrame, column: str, *, by: Sequence[str], tolerance: float
) -> tuple[pd.Series, list[Merge]]:
    """``frame[column]`` with the values of each ``by`` group that lie within ``tolerance`` of each other (see
    ``tolerance_groups``) replaced by the median of their distinct values, and one ``Merge`` per such set.

    Rows whose value merges with none keep it as it was, bit for bit."""
    out = frame[column].copy()
    merges = []
    if tolerance <= 0 or not len(frame):
        return out, merges
    for key, values in frame.groupby(list(by), sort=True)[column]:
        key = key if isinstance(key, tuple) else (key,)
        for group in tolerance_groups(values.dropna(), tolerance):
            if len(group) < 2:
                continue
            value = float(np.median(group))
            # a no-op on the float columns analysed; never an int column set to a median
            out = out.astype(float)
            out.loc[values.index[values.isin(group)]] = value
            merges.append(Merge(column, group, value, dict(zip(by, key))))
    return out, merges


def merge_budgets(table: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    """``table`` with the token budgets of each model that lie within ``tolerance`` of each other merged
    (``merge_close``); the budgets as given stay in ``tokens_reported`` and the merges, each with the batch
    sizes its rows have, in ``attrs["budget_merges"]``. Runs that then share a cell and an lr are averaged as
    seeds are."""
    out = table.copy()
    if "tokens_reported" not in out:  # a table merged before keeps the values its source gave
        out["tokens_reported"] = out["tokens"]
    out["tokens"], merges = merge_close(out, "tokens", by=BUDGET_GROUP, tolerance=tolerance)
    merged = [replace(m, where=m.where | {"batch_size": _batch_sizes(out, m)}) for m in merges]
    out.attrs = {**table.attrs, "budget_merges": merged}
    return out


def _batch_sizes(table: pd.DataFrame, merge: Merge) -> tuple:
    rows = table["model"].eq(merge.where["model"]) & table["tokens"].eq(merge.value)
    return tuple(sorted(set(table.loc[rows, "batch_size"].tolist())))


def merge_notes(merges: Sequence[Merge], order: Sequence[str]) -> list[str]:
    """One note per merge (models in ``order``), at most ``MAX_NOTES`` and then one for the rest."""
    rank = {name: i for i, name in enumerate(order)}
    ranked = sorted(
        merges,
        key=lambda m: (
            rank.get(str(m.where.get("model")), len(rank)),
            m.column,
            m.where.get("batch_size", 0),
            m.value,
        ),
    )
    notes = [_merge_note(m) for m in ranked[:MAX_NOTES]]
    if len(ranked) > MAX_NOTES:
        notes.append(
            f"{len(ranked) - MAX_NOTES} more sets of values within the tolerance analysed as one each "
            "(--tokens-tolerance; the analysis table's tokens_reported keeps the budgets as given)"
        )
    return notes


def _merge_note(merge: Merge) -> str:
    if merge.column == "tokens":
        batches = merge.where["batch_size"]
        batch = f"batch {number(batches[0])}" if len(batches) == 1 else f"batch sizes {listing(batches)}"
        return (
            f"tokens {_span(merge.values)} (model {merge.where['model']}, {batch}) analysed as one "
            f"{'cell' if len(batches) == 1 else 'budget'} at {number(merge.value)} "
            "(within --tokens-tolerance)"
        )
    return (
        f"batch sizes {_span(merge.values)} sequences (model {merge.where['model']}; batch_size in tokens / "
        f"seq_len) analysed as one batch size of {number(merge.value)} sequences (within --tokens-tolerance)"
    )


def repeat_note(table: pd.DataFrame, schedule: str) -> list[str]:
    """A note on the runs of ``schedule`` that merged budgets bring to one cell and lr (e.g. one seed of two
    sweep versions): they are averaged as seeds are. Empty when there are none."""
    runs = table[table["schedule"].eq(schedule) & ~table["status"].eq("failed")]
    if "tokens_reported" not in runs or not len(runs):
        return []
    keys = ["model", "tokens", "batch_size", "lr"]
    budgets = runs.groupby(keys, sort=True)["tokens_reported"].agg(["nunique", "size"])
    repeated = budgets[budgets["nunique"] > 1]
    if repeated.empty:
        return []
    rank = {name: i for i, name in enumerate(model_order(runs))}
    model, tokens, batch, lr = min(repeated.index, key=lambda point: (rank[point[0]], *point[1:]))
    return [
        f"{int(repeated['size'].sum())} runs at {len(repeated)} (cell, lr) points come from budgets merged "
        f"within --tokens-tolerance (e.g. model {model}, batch {batch:g}, T = {number(tokens)}, lr {lr:.3g}: "
        f"{int(repeated.loc[(model, tokens, batch, lr), 'size'])} runs): averaged as seeds are "
        "(n_runs counts them)"
    ]


def _span(values: Sequence[float]) -> str:
    # Every run of a jittered table may give its own budget: a note names a few values, else their range.
    if len(values) <= MAX_NAMED:
        return listing(values)
    low, high = listing([values[0], values[-1]]).split(" and ")
    return f"{len(values)} values from {low} to {high}"


def listing(values: Sequence[float]) -> str:
    """'a and b', 'a, b and c': seven significant digits (1.983906e9),
    more where that would show two as one."""
    digits = next((d for d in range(7, 18) if len({f"{v:.{d}g}" for v in values}) == len(set(values))), 17)
    texts = [number(v, digits) for v in values]
    return texts[0] if len(texts) == 1 else f"{', '.join(texts[:-1])} and {texts[-1]}"


def number(value: float, digits: int = 7) -> str:
    """1983906000.0 -> '1.983906e9', as a person writes a budget (not '1.983906e+09')."""
    mantissa, sep, exponent = f"{value:.{digits}g}".partition("e")
    return f"{mantissa}e{int(exponent)}" if sep else mantissa
