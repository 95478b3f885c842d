"""Training curves in the store: one Parquet file per lineage, its points keyed so a resumed or retried
lineage neither loses nor duplicates one.

Layout under the store's root (beside ``results/``)::

    curves/sweep_id=<sweep_id>/<lineage_id>.parquet   # columns of CURVE_SCHEMA minus sweep_id
    curves/sweep_id=<sweep_id>/compacted-<time>-<hex>.parquet   # finished lineages' points, `compact`ed

A point is keyed by (lineage_id, segment, budget, kind, step): the trunk's points have segment 'trunk' and a
null budget; a decay branch's have segment 'decay' and the budget's tokens. Writing merges the new points into
the lineage's stored points by key (the newest copy of a point wins) and replaces its own file atomically, so
a lineage that hands its points on again after a resume rewrites them in place; its own file, holding every
copy's points, wins over a compacted one (`powersweep.store_layout.curve_owners`).

`curve_records` is the one place a trial turns a lineage's points into rows (list of dicts with the ids): the
trackers of `run.loggers` (sweeps/trackers.py) get these rows, and `run_job(..., on_curve=...)` hands them on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from powersweep.sweeps.lineages import LineageJob  # imports torch: the store reads curves without it

KEY = ("lineage_id", "segment", "budget", "kind", "step")
_STR, _INT, _FLOAT = pa.string(), pa.int64(), pa.float64()
CURVE_SCHEMA = pa.schema(
    [
        # id / the training trajectory (the results' lineage_id)
        pa.field("lineage_id", _STR, nullable=False),
        # id / the result row the point leads to: a decay point's budget row, a trunk evaluation's trunk row;
        # null for trunk training points (they lead to every budget forked later)
        pa.field("run_id", _STR),
        pa.field("segment", _STR, nullable=False),  # 'trunk' | 'decay'
        pa.field("budget", _FLOAT),  # tokens / the decay branch's budget; null on the trunk
        # tokens / seen where the decay branch left the trunk; null on the trunk
        pa.field("fork_tokens", _FLOAT),
        # 'train' (a training step's loss) | 'eval' (held-out loss there)
        pa.field("kind", _STR, nullable=False),
        pa.field("step", _INT, nullable=False),  # optimizer steps done
        pa.field("tokens", _INT, nullable=False),  # tokens seen: step * batch_size * seq_len
        pa.field("lr", _FLOAT),  # learning rate of that step (muP base lr); null on eval points
        pa.field("loss_train", _FLOAT),  # nats/token / the step's training loss
        pa.field("loss_train_mean", _FLOAT),  # nats/token / mean training loss since the previous grid point
        # steps / the steps that mean covers (ending at `step`); 0 on eval points
        pa.field("mean_steps", _INT),
        pa.field("loss_eval", _FLOAT),  # nats/token / held-out loss (eval points only)
    ]
)


def curve_records(job: LineageJob, points: Sequence[Mapping]) -> list[dict]:
    """A lineage's curve points (proxy_models.curve_recorder) as store rows, with its lineage_id and each
    point's run_id: the trunk's training points, and the points that lead to the job's rows (its budgets'
    decay branches, its trunk evaluations). A pack trains the union of its members' budgets; a member's other
    points were stored with the rows that the job no longer asks for.

    Example: ``{"lineage_id": "3e88...", "run_id": "9a37...", "segment": "decay", "budget": 125000.0,
    "fork_tokens": 100096.0, "kind": "train", "step": 400, "tokens": 102400, "lr": 0.00098, "loss_train": 3.1,
    "loss_train_mean": 3.2, "loss_eval": nan}``
    """
    budgets = {float(t): r for t, r in zip(job.budgets, job.run_ids)}
    trunk = {int(t): r for t, r in zip(job.trunk_tokens, job.trunk_run_ids)}
    rows = []
    for point in points:
        if point["segment"] == "decay":
            run_id = budgets.get(float(point["budget"]))
        else:
            run_id = trunk.get(int(point["tokens"])) if point["kind"] == "eval" else ""
        if run_id is not None:
            trunk_point = point["segment"] == "trunk"
            rows.append(
                {
                    **point,
                    "lineage_id": job.lineage_id,
                    "run_id": run_id or None,
                    **({"budget": None, "fork_tokens": None} if trunk_point else {}),
                }
            )
    return rows


def merge_points(old: pa.Table | None, rows: Sequence[Mapping]) -> pa.Table:
    """``old`` (a lineage's stored curve, or None) with ``rows`` merged in by KEY, the new copy of a point
    winning; sorted by segment, budget, step and kind (a step's train point before its eval point). In numpy:
    a trial merges before each row it stores."""
    new = pa.Table.from_pylist(list(rows), schema=CURVE_SCHEMA)  # a key left out is null; others ignored
    table = pa.concat_tables([t for t in (old, new) if t is not None])
    ranks = {name: _ranks(table.column(name)) for name in ("segment", "kind", "lineage_id")}
    keys = {
        "decay": pc.not_equal(table.column("segment"), "trunk").to_numpy(zero_copy_only=False),  # trunk first
        "budget": pc.fill_null(table.column("budget"), -1.0).to_numpy(),  # the trunk's null as a plain key
        "step": table.column("step").to_numpy(),
        "evaluated": pc.equal(table.column("kind"), "eval").to_numpy(zero_copy_only=False),  # train first
        **ranks,
    }
    by = ["decay", "budget", "step", "evaluated", "segment", "kind", "lineage_id"]
    position = np.arange(len(table))
    order = np.lexsort([-position, *(keys[k] for k in reversed(by))])  # of equal keys, the newest first
    changed = np.zeros(max(len(table) - 1, 0), dtype=bool)
    for name in ("lineage_id", "segment", "budget", "kind", "step"):  # KEY: equal keys are adjacent now
        values = keys[name][order]
        changed |= values[1:] != values[:-1]
    first = np.concatenate([[True], changed]) if len(table) else np.zeros(0, dtype=bool)
    return table.take(order[first])


def _ranks(column: pa.ChunkedArray) -> np.ndarray:
    """Each string's rank among the column's distinct values (in sorted order): a sort key in numpy. The
    distinct values are few (two segments, two kinds, one lineage), so they are ranked, not the column."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    distinct = encoded.dictionary.to_numpy(zero_copy_only=False)
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[np.argsort(distinct, kind="stable")] = np.arange(len(distinct))
    return rank[encoded.indices.to_numpy(zero_copy_only=False)]


def conform_curve(table: pa.Table) -> pa.Table:
    """A stored curve file's table with CURVE_SCHEMA's columns (ValueError if it is not a curve)."""
    missing = [f.name for f in CURVE_SCHEMA if not f.nullable and f.name not in table.column_names]
    if missing:
        raise ValueError(f"not a curve file: column(s) {missing} missing")
    columns = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type)
        for f in CURVE_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=CURVE_SCHEMA)


def curve_saver(
    job: LineageJob,
    write: Callable[[list[dict]], None],
    on_curve: Callable[[LineageJob, list[dict]], None] | None = None,
) -> Callable[[list[dict]], None]:
    """The lineage driver's `on_curve` for `job`: its points as rows (`curve_records`), written with `write`
    (e.g. the store's, merging by key), then handed to `on_curve(job, rows)` if given."""

    def save(points: list[dict]) -> None:
        if not points:
            return
        rows = curve_records(job, points)
        write(rows)
        if on_curve is not None:
            on_curve(job, rows)

    return save


def curve_status(names: set[str], lineages: set[str], *, on: bool = True) -> dict:
    """`status`'s curve line: of the sweep's `lineages`, how many have a stored curve file (`names`); `on` is
    False for a sweep whose spec turned curves off (`run.curves: false`), which stores none."""
    return {"lineages": len(lineages), "stored": len(names & lineages), "on": on}
