"""Runs that share a cell must have been trained alike: the analysis averages a cell's runs at one lr as seeds
and fits one bowl through its lrs.

A table can hold one cell's runs under two warmups (two sweeps of one grid, or a sweep's rows from before a
change of ``warmup_tokens``); averaged, they give the loss of neither run. Beyond its cell (schedule, model,
tokens, batch_size) a row says how its run was trained in the columns ``SETTINGS``; within a cell each must
take one value. A null (a row written before the column existed, or a table without it) states nothing and is
ignored.

>>> require_uniform_settings(table, schedules={"wsd", "power"})
# AnalysisError naming the column that differs
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from powersweep.analysis.errors import AnalysisError

# settings_id hashes every training setting but the cell and the searched values (sweeps/lineages.py): it is
# last because the named columns say better which setting differs.
SETTINGS = ("warmup_tokens", "decay_fraction", "decay_shape", "seq_len", "parametrisation", "settings_id")
CELL = ("schedule", "model", "tokens", "batch_size")
MAX_VALUES = 3  # values shown per column: the error is one line
MAX_CHARS = 12  # characters shown per value (a settings_id has 16)
UNSTATED = (
    "",
    "unknown",
)  # text that states nothing: load_table writes 'unknown' for an unstated parametrisation


def require_uniform_settings(table: pd.DataFrame, schedules: Iterable[str]) -> None:
    """Raise ``AnalysisError`` when the rows of ``schedules``
    that share a cell differ in a training setting."""
    rows = table[table["schedule"].isin(list(schedules))]
    mixed = {name: _mixed(rows, name) for name in SETTINGS if name in rows.columns}
    mixed = {name: in_mixed_cell for name, in_mixed_cell in mixed.items() if in_mixed_cell.any()}
    if mixed:
        raise AnalysisError(_message(rows, mixed))


def _stated(values: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(values):
        return values
    text = values.astype("string").str.strip()
    return text.mask(text.isin(UNSTATED))


def _mixed(rows: pd.DataFrame, name: str) -> pd.Series:
    """Per row: whether its cell holds more than one stated value of ``name``."""
    return _stated(rows[name]).groupby([rows[k] for k in CELL]).transform("nunique").gt(1)


def _message(rows: pd.DataFrame, mixed: dict[str, pd.Series]) -> str:
    # A named column that differs explains the settings_id that differs with it; its hashes would only crowd
    # the line.
    named = [name for name in mixed if name != "settings_id"] or ["settings_id"]
    detail = "; ".join(_counts(rows.loc[mixed[name], name], name) for name in named)
    also = " and settings_id" if "settings_id" in mixed and "settings_id" not in named else ""
    in_mixed = pd.concat(list(mixed.values()), axis=1).any(axis=1)
    # The sweeps last: the command line cuts a long line at its end (300 characters), and the fix must
    # survive.
    return (
        f"rows sharing a cell differ in {detail}{also}: such runs are never averaged; analyze one setting "
        "at a time (results/sweep_id=NAME or a filtered table) or re-submit the sweep with --replace"
        f"{_sweeps(rows[in_mixed])}"
    )


def _counts(values: pd.Series, name: str) -> str:
    """'warmup_tokens 1e+09 (60 rows), 2e+09 (60 rows)': the most frequent values first."""
    counts = _stated(values).value_counts()
    shown = [f"{_value(value)} ({n} rows)" for value, n in counts.head(MAX_VALUES).items()]
    more = [f"{len(counts) - MAX_VALUES} more"] if len(counts) > MAX_VALUES else []
    return f"{name} " + ", ".join(shown + more)


def _value(value) -> str:
    if isinstance(value, str):
        return repr(value if len(value) <= MAX_CHARS else value[:MAX_CHARS] + "...")
    return f"{float(value):.6g}"  # 1e+09 tokens, 4096, 0.1


def _sweeps(rows: pd.DataFrame) -> str:
    ids = sorted(set(rows["sweep_id"].astype(str)) - {""}) if "sweep_id" in rows.columns else []
    if not ids:
        return ""
    more = f", {len(ids) - MAX_VALUES} more" if len(ids) > MAX_VALUES else ""
    return f" (sweep_id {', '.join(repr(i) for i in ids[:MAX_VALUES])}{more})"
