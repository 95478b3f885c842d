"""The results table in Arrow: its schema, derived from the row's one declaration, and validation of rows.

One row is one evaluation of one run at one token budget; its columns are declared in `powersweep.rows`
(names, types, units, who fills them in). ``SCHEMA`` is their Arrow schema for the store; ``COLUMN_DOCS``
gives the unit and meaning of every column.

Example::

    table = rows_to_table([row], defaults={"sweep_id": "wsd-small", "created_at": now})
    frame = table_to_frame(table)  # the same pandas dtypes on every read, see PANDAS_DTYPES
"""

from __future__ import annotations

import datetime as dt
import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

from powersweep.rows import COLUMNS, PHASES, STATUSES, Column

__all__ = [
    "COLUMNS",
    "COLUMN_DOCS",
    "PHASES",
    "REQUIRED",
    "SCHEMA",
    "STATUSES",
    "StoreError",
    "rows_to_table",
]


class StoreError(ValueError):
    """A mistake the user can fix: the message names the field, shows the value and says the fix."""


# Python type of a column (powersweep.rows) -> its Arrow type
ARROW_TYPES: dict[type, pa.DataType] = {
    str: pa.string(),
    int: pa.int64(),
    float: pa.float64(),
    dt.datetime: pa.timestamp("us", tz="UTC"),
}
SCHEMA = pa.schema([pa.field(c.name, ARROW_TYPES[c.type], nullable=not c.required) for c in COLUMNS])
COLUMN_DOCS: dict[str, str] = {c.name: c.doc for c in COLUMNS}
REQUIRED: frozenset[str] = frozenset(c.name for c in COLUMNS if c.required)

# Arrow type -> pandas dtype on read; the same for every read, whether or not a column has nulls.
PANDAS_DTYPES: dict[pa.DataType, Any] = {pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype()}

_COLUMNS_BY_NAME = {c.name: c for c in COLUMNS}
_INT64_RANGE = range(-(2**63), 2**63)


def rows_to_table(rows: Sequence[Mapping[str, Any]], *, defaults: Mapping[str, Any]) -> pa.Table:
    """Validate ``rows`` against ``SCHEMA`` and build an Arrow table of all its columns.

    ``defaults`` fill columns a row leaves out; other absent optional columns become null.
    Raises ``StoreError`` naming the row, column and value of the first problem found.
    """
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence) or not rows:
        raise StoreError(f"rows={_short(rows)}: must be a non-empty list of dicts, one per evaluation")
    complete = [_validate_row(i, row, defaults) for i, row in enumerate(rows)]
    _check_unique_run_ids(complete)
    return pa.Table.from_pylist(complete, schema=SCHEMA)


def table_to_frame(table: pa.Table) -> pd.DataFrame:
    """Convert a table with ``SCHEMA``'s columns to pandas with the dtypes of ``PANDAS_DTYPES``.

    Strings are ``string``, integers nullable ``Int64``, floats ``float64`` (null is NaN) and
    ``created_at`` is ``datetime64[us, UTC]``; never categorical, whatever the files hold.
    """
    return table.to_pandas(types_mapper=PANDAS_DTYPES.get)


def empty_frame() -> pd.DataFrame:
    """An empty results table with every column of ``SCHEMA`` and the usual dtypes."""
    return table_to_frame(SCHEMA.empty_table())


def _validate_row(index: int, row: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    has_run_id = isinstance(row, Mapping) and "run_id" in row
    where = f"row {index}" + (f" (run_id={row['run_id']!r})" if has_run_id else "")
    if not isinstance(row, Mapping):
        raise StoreError(f"{where}={_short(row)}: must be a dict of column -> value")
    for name in row:
        if name not in _COLUMNS_BY_NAME:
            raise StoreError(f"unknown column {name!r} in {where}: not in SCHEMA{_did_you_mean(name)}")
    complete = dict(row)
    for name, value in defaults.items():
        if _as_column_value(complete.get(name), str) is None:
            complete[name] = value
    return {column.name: _checked_value(column, complete.get(column.name), where) for column in COLUMNS}


def _checked_value(column: Column, value: Any, where: str) -> Any:
    """``value`` as stored in ``column``; raises StoreError if it does not belong there."""
    stored = _as_column_value(value, column.type)
    if stored is None:
        if column.required:
            raise StoreError(
                f"missing required column {column.name!r} in {where} (value {value!r}): "
                f"give every row a {_expected(column.type)}"
            )
        return None
    if not _has_type(stored, column.type):
        raise StoreError(
            f"{column.name}={_short(value)} ({type(value).__name__}) in {where}: must be a "
            f"{_expected(column.type)}" + ("" if column.required else " or None")
        )
    allowed = {"status": STATUSES, "phase": PHASES}.get(column.name)
    if allowed and stored not in allowed:
        raise StoreError(
            f"{column.name}={value!r} in {where}: must be one of {', '.join(map(repr, allowed))}"
        )
    return stored


def _as_column_value(value: Any, column_type: type) -> Any:
    """Map the usual spellings of "missing" to None and whole floats to ints in integer columns.

    NaN means missing, as in pandas (the trainer reports lr_max=nan for schedules without a cap),
    and token counts often arrive as floats such as 2e6.
    """
    if type(value) is str or type(value) is int:  # the common case, without the slower ABC checks below
        return value
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if math.isnan(value):
            return None
        if column_type is int and math.isfinite(value) and float(value).is_integer():
            return int(value)
    return value


def _has_type(value: Any, column_type: type) -> bool:
    if type(value) is column_type and column_type in (str, float):  # the common case, checked first
        return True
    if column_type is str:
        return isinstance(value, str)
    if isinstance(value, bool):  # bool is an int in Python, never a count or a rate here
        return False
    if column_type is int:
        return isinstance(value, numbers.Integral) and int(value) in _INT64_RANGE
    if column_type is float:
        return isinstance(value, numbers.Real)
    return isinstance(value, dt.datetime) and value.tzinfo is not None and value.utcoffset() is not None


def _expected(column_type: type) -> str:
    names = {str: "str", int: "whole number (64-bit int)", float: "float"}
    return names.get(column_type, "timezone-aware datetime, e.g. datetime.now(timezone.utc)")


def _check_unique_run_ids(rows: list[dict[str, Any]]) -> None:
    first_seen: dict[str, int] = {}
    for index, row in enumerate(rows):
        previous = first_seen.setdefault(row["run_id"], index)
        if previous != index:
            raise StoreError(
                f"run_id={row['run_id']!r} in rows {previous} and {index}: each evaluation "
                "(run at one token budget) needs its own run_id"
            )


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, list(_COLUMNS_BY_NAME), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"{hint} (the columns are listed in COLUMN_DOCS)"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
