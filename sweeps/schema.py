"""Columns of the results table: names, Arrow types, units, and validation of result rows.

One row is one evaluation of one run at one token budget. ``SCHEMA`` is the single
definition of the table, for the store and for `analysis.table` (which reads its names, types, statuses and
phases: keep this module free of torch and Ray); ``COLUMN_DOCS`` gives the unit and meaning of every column.

Example::

    table = rows_to_table([row], defaults={"sweep_id": "wsd-small", "created_at": now})
    frame = table_to_frame(table)  # the same pandas dtypes on every read, see PANDAS_DTYPES
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import difflib
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pyarrow as pa

STATUSES = ("ok", "diverged", "failed")
PHASES = ("final", "trunk")


class StoreError(ValueError):
    """A mistake the user can fix: the message names the field, shows the value and says the fix."""


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of the results table."""

    name: str
    type: pa.DataType
    required: bool  # a row must give a non-null value (created_at is filled in by the store)
    doc: str  # "unit / meaning", rendered in the README


_STR, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
_TIMESTAMP = pa.timestamp("us", tz="UTC")

COLUMNS: tuple[Column, ...] = (
    Column(
        "sweep_id",
        _STR,
        True,
        "id / the sweep; the partition key, stored as the directory name sweep_id=<id>",
    ),
    Column("run_id", _STR, True, "id / one evaluation of one run at one token budget; unique within a sweep"),
    Column(
        "lineage_id",
        _STR,
        True,
        "id / the training trajectory; evaluations of one run at several token budgets share it",
    ),
    Column(
        "schedule", _STR, True, "name / learning-rate schedule, e.g. 'wsd', 'power', 'cosine', 'constant'"
    ),
    Column("model", _STR, True, "name / proxy model configuration"),
    Column("n_params", _INT, False, "parameters / all trainable parameters, embeddings included"),
    Column("n_params_non_embedding", _INT, False, "parameters / trainable parameters excluding embeddings"),
    Column(
        "m_width", _FLOAT, False, "dimensionless / muP width multiplier, d_model / d_model of the base model"
    ),
    Column(
        "lr",
        _FLOAT,
        True,
        "learning rate / peak learning rate of the muP base model (hidden matrices train at lr / m_width)",
    ),
    Column(
        "lr_max",
        _FLOAT,
        False,
        "learning rate / upper cap of the schedule (Power scheduler); null where the schedule has none",
    ),
    Column(
        "power_a",
        _FLOAT,
        False,
        "coefficient / a in the Power schedule lr(n) = min(lr_max, batch_size * a * n^b), batch_size in "
        "sequences, n in tokens seen; null for other schedules",
    ),
    Column(
        "power_b",
        _FLOAT,
        False,
        "dimensionless / exponent b (negative) of the same Power schedule; null for other schedules",
    ),
    Column("batch_size", _INT, True, "sequences / sequences per optimizer step"),
    Column("seq_len", _INT, True, "tokens / tokens per sequence"),
    Column(
        "tokens",
        _INT,
        True,
        "tokens / training tokens seen at this evaluation: the token budget (phase 'final') or the tokens "
        "seen at the fork (phase 'trunk')",
    ),
    Column("warmup_tokens", _INT, False, "tokens / length of the warmup phase"),
    Column(
        "decay_fraction",
        _FLOAT,
        False,
        "fraction 0-1 / share of `tokens` spent in the final decay phase; null without one",
    ),
    Column("decay_shape", _STR, False, "name / shape of the decay phase, e.g. 'linear', '1-sqrt', 'exp'"),
    Column("seed", _INT, True, "integer / random seed for initialisation and data order"),
    Column("loss_eval", _FLOAT, False, "nats/token / mean held-out cross-entropy at `tokens`"),
    Column("ppl_eval", _FLOAT, False, "dimensionless / held-out perplexity, exp(loss_eval)"),
    Column(
        "loss_train",
        _FLOAT,
        False,
        "nats/token / mean training loss over the last logging window before `tokens`",
    ),
    Column(
        "status",
        _STR,
        True,
        "label / 'ok' or 'diverged' (loss blew up, see diverged_at_tokens); 'failed' is accepted from "
        "other writers but never written by a sweep: a crashed trial is retried and writes its rows only "
        "once they are final",
    ),
    Column(
        "diverged_at_tokens",
        _INT,
        False,
        "tokens / tokens seen when divergence was detected; null unless status is 'diverged'",
    ),
    Column("wall_s", _FLOAT, False, "seconds / wall-clock training time up to `tokens`"),
    Column(
        "tokens_per_s",
        _FLOAT,
        False,
        "tokens/second / training throughput; in a packed trial (run.pack > 1) this variant's share: its "
        "tokens over the trial's wall time, so the trial's throughput is the sum over its variants",
    ),
    Column(
        "mfu",
        _FLOAT,
        False,
        "fraction 0-1 / model FLOPs utilisation: 6 * n_params * tokens_per_s over the matmul peak of the "
        "run's precision (bf16 on CUDA: data sheet or measured; fp32 measured on CPU), at most 1; "
        "in a packed trial this variant's share, summing to the trial's MFU",
    ),
    Column(
        "mfu_attention",
        _FLOAT,
        False,
        "fraction 0-1 / mfu with attention: (6 * n_params + 12 * n_layers * n_heads * d_head * seq_len) * "
        "tokens_per_s over the peak of the run's precision (bf16 on CUDA); null in rows from before it",
    ),
    Column(
        "parametrisation",
        _STR,
        False,
        "name / 'mup': every proxy model here is muP (proxy_models/model.py); null in rows from before it",
    ),
    Column(
        "settings_id",
        _STR,
        False,
        "id / hash of the run's training settings other than its cell (model, batch_size, tokens) and its "
        "searched values (seed, lr, power_a, power_b, lr_max): warmup, decay, optimizer, data, model "
        "overrides; rows of one cell and lr with different settings_id were trained differently and are "
        "never averaged; null in rows from before it",
    ),
    Column(
        "device",
        _STR,
        False,
        "name / accelerator that trained the run, e.g. 'NVIDIA H100 80GB HBM3' or 'cpu'",
    ),
    Column(
        "phase",
        _STR,
        False,
        "label / 'final': a budget's result at the end of its decay (what analysis uses); 'trunk': the "
        "lineage's trunk evaluated at a fork point (stable-phase loss, not a budget result); null (files "
        "written before the column existed) reads as 'final'",
    ),
    Column("git_sha", _STR, False, "hex / git commit of the code that produced the row"),
    Column(
        "versions", _STR, False, "JSON text / object {package: version} of the packages that produced the row"
    ),
    Column(
        "execution",
        _STR,
        False,
        "JSON text / how the row's run executed: variants packed with it (`pack`), `micro_batch_size`, "
        "`activation_checkpointing`, whether the blocks were `compiled` (and `compile_error`, why not, where "
        "compiling failed and the run fell back to eager), CUDA out-of-memory errors absorbed by "
        "halving the micro-batch (`out_of_memory_shrinks`) and `pack_split` when an out-of-memory pack was "
        "retrained in smaller packs; null in rows from before it",
    ),
    Column(
        "created_at",
        _TIMESTAMP,
        True,
        "UTC timestamp, microseconds / when the row was written (filled in on write if absent); "
        "the newest row wins when a run_id is stored twice",
    ),
)

SCHEMA = pa.schema([pa.field(c.name, c.type, nullable=not c.required) for c in COLUMNS])
COLUMN_DOCS: dict[str, str] = {c.name: c.doc for c in COLUMNS}
REQUIRED: frozenset[str] = frozenset(c.name for c in COLUMNS if c.required)

# Arrow type -> pandas dtype on read; the same for every read, whether or not a column has nulls.
PANDAS_DTYPES: dict[pa.DataType, Any] = {_STR: pd.StringDtype(), _INT: pd.Int64Dtype()}

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
        if _as_column_value(complete.get(name), _STR) is None:
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


def _as_column_value(value: Any, arrow_type: pa.DataType) -> Any:
    """Map the usual spellings of "missing" to None and whole floats to ints in integer columns.

    NaN means missing, as in pandas (the trainer reports lr_max=nan for schedules without a cap),
    and token counts often arrive as floats such as 2e6.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        if math.isnan(value):
            return None
        if arrow_type == _INT and math.isfinite(value) and float(value).is_integer():
            return int(value)
    return value


def _has_type(value: Any, arrow_type: pa.DataType) -> bool:
    if arrow_type == _STR:
        return isinstance(value, str)
    if isinstance(value, bool):  # bool is an int in Python, never a count or a rate here
        return False
    if arrow_type == _INT:
        return isinstance(value, numbers.Integral) and int(value) in _INT64_RANGE
    if arrow_type == _FLOAT:
        return isinstance(value, numbers.Real)
    return isinstance(value, dt.datetime) and value.tzinfo is not None and value.utcoffset() is not None


def _expected(arrow_type: pa.DataType) -> str:
    names = {_STR: "str", _INT: "whole number (64-bit int)", _FLOAT: "float"}
    return names.get(arrow_type, "timezone-aware datetime, e.g. datetime.now(timezone.utc)")


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
