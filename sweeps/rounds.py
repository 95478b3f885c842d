"""Adaptive mode at run time: each group's search state from the store, and its rounds run through `execute`.

A round is every lineage the groups' searches ask for next (sweeps/adaptive.py); the rounds run in one
`execute` call (the same Ray trials, store and lineage checkpoints as a grid), each once the trials of the
round before have ended, so a trial's process serves several rounds. An lr extended to larger budgets resumes
its lineage from its checkpoint and trains only the missing budgets. After each round the state is read back
from the store, so a driver killed at any moment, run again (`resume` or `submit`), recomputes the round in
progress from the rounds before it, trains what that round lacks, and goes on exactly as it would have.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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

    rounds_run: int  # rounds that trained something (a resumed round in progress counts as one)
    lineages_run: int  # lineages trained or extended, over all rounds
    failed_trials: int
    execution: ExecutionReport | None  # where the wall time of the rounds went; None when nothing ran


def run_rounds(
    searches: Sequence[LrSearch], settings: ExecutionSettings, *, pack: int = 1, run: Callable = execute
) -> RoundsRun:
    """Run every group's search to its end: read the store, run what the pending rounds lack, repeat; the
    rounds go to one `run` (`execute`), whose trials outlive a round.

    Stops early when a round has failed trials (its rows are missing: `resume` retries it) or trains nothing
    new (a stored row of status 'failed' blocks its group: it is not retried here)."""
    store, rounds = ResultStore(settings.store_uri), []

    def next_round() -> list:
        table = store.read(sweep_id=settings.sweep_id).table
        stored, results = set(table["run_id"]), stored_results(table)
        jobs = [j for s in searches for j in round_jobs(s, search_state(s, results), stored)]
        key = sorted(r for j in jobs for r in j.run_ids)
        if not jobs or (rounds and key == rounds[-1][0]):
            return []
        rounds.append((key, len(jobs)))
        return list(pack_jobs(jobs, pack, gpu_bytes=settings.gpu_memory_bytes))

    first = next_round()
    if not first:
        return RoundsRun(0, 0, 0, None)
    report = run(first, settings, next_round=next_round)
    return RoundsRun(len(rounds), sum(n for _, n in rounds), report.failed_trials, report)


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
