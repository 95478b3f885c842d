"""`powersweep compact`: a stored sweep's files merged into few, so that reading it stays fast at 10^5 rows.

A lineage's rows file and its curve are rewritten while it trains, so only finished lineages' files merge: all
of them when no driver runs the sweep, else those whose planned rows are all stored (a grid's; a search's
lineages are known only to its driver). Every other result file (rows written once, earlier compacted files)
merges at any time. Running beside a sweep is safe either way: the store deletes a file only once a merged
file holds it, and only if the file did not change since it was read (`ResultStore.compact`).

Example::

    done = compact("runs/cpu-quick", sweep_id="cpu-quick")   # done.result_files: (1536, 1)
"""

from __future__ import annotations

from powersweep.sweeps.lock import SweepLock, SweepLockError
from powersweep.sweeps.plan import plan
from powersweep.sweeps.store import Compaction, ResultStore
from powersweep.sweeps.sweep import stored_spec


def compact(storage: str, *, sweep_id: str) -> Compaction:
    """Compact the sweep ``sweep_id`` of the store at ``storage`` (its sweeps: ``sweep.stored_sweeps``)."""
    return ResultStore(storage).compact(sweep_id=sweep_id, finished=finished_lineages(storage, sweep_id))


def finished_lineages(storage: str, sweep_id: str) -> set[str] | None:
    """The lineages of the sweep whose files no trial writes any more (see the module docstring); None for
    all of them, when no driver runs the sweep."""
    store = ResultStore(storage)
    try:
        SweepLock(storage, sweep_id).check()
    except SweepLockError:  # a driver runs the sweep
        stored = store.run_ids(sweep_id=sweep_id)
        p = plan(stored_spec(storage, sweep_id=sweep_id))
        return {j.lineage_id for j in p.jobs if set(j.row_ids) <= stored} if p.mode.name == "grid" else set()
    return None


def compaction_line(sweep_id: str, done: Compaction, seconds: float) -> str:
    """One line a person reads: what the compaction of one sweep did."""
    (rows_before, rows_after), (curves_before, curves_after) = done.result_files, done.curve_files
    return (
        f"sweep {sweep_id}: {done.rows:,} rows in {rows_after:,} result files (were {rows_before:,}), "
        f"curves in {curves_after:,} files (were {curves_before:,}), {seconds:.1f} s"
    )
