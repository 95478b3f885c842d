"""The order in which models appear in every output (figures, tables, notes, coefficients.json): by size.

A model's size is the median ``n_params`` of its rows; models without one follow, in the natural order of
their names, so that '512' < '768' < '1024' and 'd256-l4' < 'd1024-l4' (a string sort puts '1024' before
'512').

>>> model_order(pd.DataFrame({"model": ["1024", "512", "768"]}))
['512', '768', '1024']
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd

_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """'w1024' -> ('w', 1024, ''): runs of digits compare as numbers, the rest case-insensitively."""
    # re.split with a group alternates text and digits, text first, so two keys compare like with like.
    parts = _DIGITS.split(str(name))
    return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts)), str(name)


def model_order(frame: pd.DataFrame) -> list[str]:
    """The frame's model names from smallest to largest median n_params; those without one after, by name."""
    names = frame["model"].astype(str).unique().tolist() if len(frame) else []
    sizes = (
        frame.groupby(frame["model"].astype(str))["n_params"].median()
        if "n_params" in frame
        else pd.Series(dtype=float)
    )

    def key(name: str) -> tuple:
        size = float(sizes.get(name, np.nan))
        return (not np.isfinite(size), size if np.isfinite(size) else 0.0, natural_key(name))

    return sorted(names, key=key)


def in_model_order(frame: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """``frame``'s rows with their models in ``order`` (default: ``model_order(frame)``), each model's rows in
    the order they had. Only the rows move: fits made on the frame before keep their numbers."""
    if not len(frame) or "model" not in frame:
        return frame
    rank = {name: i for i, name in enumerate(order if order is not None else model_order(frame))}
    position = frame["model"].astype(str).map(rank).fillna(len(rank))  # a model the order lacks goes last
    return frame.iloc[np.argsort(position.to_numpy(), kind="stable")].reset_index(drop=True)
