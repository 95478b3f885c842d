"""Grid mode: every combination of the spec's values is a run, all of them planned before the sweep starts.

Each combination of model, batch size, seed and searched values (lr; power a, b, lr_max) is one lineage
through every token budget (cosine: one lineage per budget, since no trunk is shared), run by `execute` in
trials of `run.pack` lineages. A sweep started again trains only the rows the store lacks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

from powersweep.sweeps.lineages import LineageJob, grid_schedules, lineage_jobs, trajectories
from powersweep.sweeps.mode import ModeRun, tally
from powersweep.sweeps.trials import pack_auto_note

if TYPE_CHECKING:
    import pandas as pd

    from powersweep.sweeps.execute import ExecutionSettings
    from powersweep.sweeps.plan import Plan
    from powersweep.sweeps.spec import SweepSpec
    from powersweep.sweeps.store import ResultStore, Stock


@dataclass(frozen=True)
class GridMode:
    name: ClassVar[str] = "grid"
    status_columns: ClassVar[tuple[str, ...]] = (
        "lineage_id",
        "phase",
        "status",
        "model",
        "batch_size",
        "tokens",
    )
    jobs: tuple[LineageJob, ...]
    notes: tuple[str, ...] = ()
    searched_trials: int = 0

    @classmethod
    def plan(cls, spec: SweepSpec, budgets: tuple[float, ...], *, gpu_bytes: int | None) -> GridMode:
        jobs, notes = [], []
        for config in trajectories(spec, max(budgets), grid_schedules(spec)):
            jobs.extend(lineage_jobs(config, budgets))
        if spec.train.schedule == "cosine":
            notes.append("cosine depends on the budget at every step: each budget runs as its own lineage")
        if spec.run.pack != 1:
            notes.append(
                f"pack {spec.run.pack}: lineages that differ only in their schedule's searched values "
                "and seed train in lockstep, one trial per pack"
            )
        if spec.run.pack == "auto":
            notes.append(pack_auto_note(spec, gpu_bytes))
        return cls(jobs=tuple(jobs), notes=tuple(notes))

    def lineages(self) -> list[tuple[LineageJob, int]]:
        return [(j, 1) for j in self.jobs]

    def sized(self) -> tuple[LineageJob, ...]:
        return ()

    def summary(self) -> dict:
        return {}

    def describe(self, lines: list[str], summary: dict) -> list[str]:
        return lines

    def complete(self, p: Plan, store: ResultStore, stored_ids: set[str]) -> bool:
        return p.row_ids <= stored_ids

    def planned_rows(self, p: Plan, store: ResultStore, settings: ExecutionSettings) -> set[str]:
        return set(p.row_ids)

    def run(self, p: Plan, store: ResultStore, settings: ExecutionSettings, stock: Stock) -> ModeRun:
        from powersweep.sweeps.execute import execute, missing_rows  # imports Ray: only when a sweep runs

        stored = stored_for_planning(p, stock, curves=settings.run.curves)
        jobs = [j for j in (missing_rows(trial, stored) for trial in p.trials) if j is not None]
        report = execute(jobs, settings)
        return ModeRun(sum(len(j.members) for j in jobs), report.failed_trials, report)

    def status(self, p: Plan, table: pd.DataFrame) -> dict:
        return fixed_status(p, table, {r for j in p.jobs for r in j.run_ids})


def fixed_status(p: Plan, table: pd.DataFrame, run_ids: set[str]) -> dict:
    """Status of a plan whose runs are counted up front (grid; an Optuna search's trials count as they are
    stored): `run_ids` are the budget rows known to be planned."""
    done_lineages = set(table.loc[table["run_id"].isin(run_ids), "lineage_id"])
    lineages = {j.lineage_id for j in p.jobs} | done_lineages
    trunk_done = int((table["phase"].eq("trunk") & table["lineage_id"].isin(lineages)).sum())
    counted = tally(
        p.sweep_id, table, run_ids, planned=p.runs, trunk_planned=p.trunk_rows, trunk_done=trunk_done
    )
    return {**counted, "lineages": lineages}


def stored_for_planning(p: Plan, stock: Stock, *, curves: bool) -> set[str]:
    """The stored row ids the missing jobs are planned from (`stock`: what the store holds readable). With
    `curves` stored, a lineage that lacks rows and its curve (deleted, or set aside as unreadable) trains all
    its budgets again from the start, so that its new curve is whole: its stored rows count as missing here
    (they are not written again, `execute._saver`)."""
    stored = set(stock.run_ids)
    if not curves:
        return stored
    redo = {
        r
        for j in p.jobs
        if j.lineage_id not in stock.curve_names and not set(j.row_ids) <= stored
        for r in j.row_ids
    }
    return stored - redo
