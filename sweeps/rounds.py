"""Adaptive mode at run time: each group's search state from the store, and its rounds run through `execute`.

A round is every lineage the groups' searches ask for next (sweeps/adaptive.py), run as one `execute` call
(the same Ray trials, store and lineage checkpoints as a grid); an lr extended to larger budgets resumes its
lineage from its checkpoint and trains only the missing budgets. After each round the state is read back
from the store, so a driver killed at any moment, run again (`resume` or `submit`), recomputes the round in
progress from the rounds before it, trains what that round lacks, and goes on exactly as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import pandas as pd

from powersweep.sweeps.adaptive import SearchState, brackets, lr_value, replay
from powersweep.sweeps.adaptive_mode import LrSearch
from powersweep.sweeps.execute import ExecutionSettings, execute, missing_budgets
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.progress import ExecutionReport
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.trials import pack_jobs

Results = dict[str, float]  # run_id -> loss_eval of a stored budget row (math.inf if it diverged)


def stored_results(table: pd.DataFrame) -> Results:
    """The store's budget rows as the searches see them; failed rows count as not stored."""
    final = table[~table["phase"].eq("trunk") & table["status"].isin(["ok", "diverged"])]
    losses = final["loss_eval"].where(final["status"].eq("ok"), math.inf).fillna(math.inf)
    return dict(zip(final["run_id"], losses.astype(float)))


def _run_ids(search: LrSearch) -> Callable[[int], dict[float, str]]:
    """Lattice index -> {budget: run_id}, cached per search."""
    cache: dict[int, dict[float, str]] = {}

    def ids(k: int) -> dict[float, str]:
        if k not in cache:
            cache[k] = {
                t: r for job in search.jobs(k, search.budgets[-1]) for t, r in zip(job.budgets, job.run_ids)
            }
        return cache[k]

    return ids


def search_state(search: LrSearch, results: Results) -> SearchState:
    """The group's search as the stored results show it (see `adaptive.replay`)."""
    ids = _run_ids(search)
    return replay(
        lambda k, t: results.get(ids(k)[t]), search.policy, search.budgets, dict(search.lineage_tokens)
    )


def searches_done(searches: Sequence[LrSearch], table: pd.DataFrame) -> bool:
    """Whether every group's search has ended on the stored rows (a resume would train nothing)."""
    results = stored_results(table)
    return all(search_state(s, results).done for s in searches)


def round_jobs(search: LrSearch, state: SearchState, stored_run_ids: set[str]) -> list[LineageJob]:
    """The pending round's lineages, each restricted to its budgets the store lacks."""
    jobs = [j for k, top in sorted(state.pending.items()) for j in search.jobs(k, top)]
    return [m for j in jobs if (m := missing_budgets(j, stored_run_ids)) is not None]


@dataclass(frozen=True)
class RoundsRun:
    """What `run_rounds` did."""

    rounds_run: int  # execute() calls, one per round (a resumed round in progress counts as one)
    lineages_run: int  # lineages trained or extended, over all rounds
    failed_trials: int
    execution: ExecutionReport | None  # wall-time shares summed over the rounds; None when nothing ran


def run_rounds(
    searches: Sequence[LrSearch], settings: ExecutionSettings, *, pack: int = 1, run: Callable = execute
) -> RoundsRun:
    """Run every group's search to its end: read the store, run what the pending rounds lack, repeat.

    Stops early when a round has failed trials (its rows are missing: `resume` retries it) or trains nothing
    new (a stored row of status 'failed' blocks its group: it is not retried here)."""
    store, reports, lineages, previous = ResultStore(settings.store_uri), [], 0, None
    while True:
        table = store.read(sweep_id=settings.sweep_id).table
        stored, results = set(table["run_id"]), stored_results(table)
        jobs = [j for s in searches for j in round_jobs(s, search_state(s, results), stored)]
        key = sorted(r for j in jobs for r in j.run_ids)
        if not jobs or key == previous:
            break
        report = run(list(pack_jobs(jobs, pack, gpu_bytes=settings.gpu_memory_bytes)), settings)
        reports.append(report)
        lineages, previous = lineages + len(jobs), key
        if report.failed_trials:
            break
    failed = reports[-1].failed_trials if reports else 0
    return RoundsRun(len(reports), lineages, failed, _combined(reports))


def _combined(reports: list[ExecutionReport]) -> ExecutionReport | None:
    """One report over several rounds: seconds summed, the largest slot count, the first round's start-up to
    the first step (the sweep's)."""
    if not reports:
        return None
    own = ("slots", "startup_parts")
    total = {
        f.name: sum(getattr(r, f.name) for r in reports) for f in fields(ExecutionReport) if f.name not in own
    }
    return ExecutionReport(
        slots=max(r.slots for r in reports), startup_parts=reports[0].startup_parts, **total
    )


def adaptive_status(searches: Sequence[LrSearch], table: pd.DataFrame) -> dict:
    """Per group: rounds done, the pending round, why, and each budget's bracket; plus the run_ids and trunk
    row ids the searches have asked for so far (completed rounds and the pending one)."""
    results, groups, run_ids, trunk_ids = stored_results(table), [], set(), set()
    for search in searches:
        state = search_state(search, results)
        asked = {**state.requested}
        for k, top in state.pending.items():
            asked[k] = max(asked.get(k, 0), top)
        for k, top in asked.items():
            for job in search.jobs(k, top):
                run_ids.update(job.run_ids)
                trunk_ids.update(job.trunk_run_ids)
        groups.append(_group_status(search, state))
    return {"groups": groups, "run_ids": run_ids, "trunk_ids": trunk_ids}


def _group_status(search: LrSearch, state: SearchState) -> dict:
    config = search.template
    return {
        "model": config.model,
        "batch_size": config.batch_size,
        "seed": config.seed,
        "rounds_done": len(state.rounds),
        "pending_lrs": sorted(lr_value(search.policy, k) for k in state.pending),
        "state": state.reason,
        "lrs": len(state.requested),
        "brackets": [vars(b) for b in brackets(state, search.policy, search.budgets)],
    }
