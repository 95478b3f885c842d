"""A sweep mode: how a sweep chooses its runs, and the operations the planner and the driver need of it.

Three modes implement `SweepMode`, one module each: the grid (`grid_mode`: every combination of the spec's
values), Optuna (`optuna_mode`: the power schedule's (a, b) sampled by TPE while the sweep runs) and the
adaptive lr search (`adaptive_mode`: lrs chosen round by round). `plan.MODES` maps `search.mode` to them;
`plan.py` and `sweep.py` call only the operations below, so a new mode is one new module and its entry there.
Importing a mode imports neither torch nor Ray: `run` and `status` import what they run on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol

if TYPE_CHECKING:
    import pandas as pd

    from powersweep.sweeps.execute import ExecutionSettings
    from powersweep.sweeps.lineages import LineageJob
    from powersweep.sweeps.plan import Plan
    from powersweep.sweeps.progress import ExecutionReport
    from powersweep.sweeps.spec import SweepSpec
    from powersweep.sweeps.store import ResultStore, Stock


@dataclass(frozen=True)
class ModeRun:
    """What running a mode did."""

    lineages_run: int  # lineages trained or extended (an Optuna search: trials started)
    failed_trials: int
    execution: ExecutionReport | None  # where the wall time went; None where it is not measured


class SweepMode(Protocol):
    name: ClassVar[str]  # the spec's search.mode
    jobs: tuple[LineageJob, ...]  # the lineages known before the sweep runs
    notes: tuple[str, ...]  # what the plan says about the mode
    searched_trials: int  # trials chosen while the sweep runs, beyond `jobs` (an Optuna search's)
    # the stored columns `status` reads (None: all): a read of a few columns stays fast at 10^5 rows
    status_columns: ClassVar[tuple[str, ...] | None]

    @classmethod
    def plan(cls, spec: SweepSpec, budgets: tuple[float, ...], *, gpu_bytes: int | None) -> SweepMode:
        """The mode's lineages for `spec`, its token budgets ascending."""

    def lineages(self) -> list[tuple[LineageJob, int]]:
        """(lineage, copies) the plan counts for its runs, trunk rows and tokens."""

    def sized(self) -> tuple[LineageJob, ...]:
        """Lineages standing for trials not known yet, whose memory is checked before the sweep starts."""

    def summary(self) -> dict:
        """The mode's own entries in `Plan.summary`."""

    def describe(self, lines: list[str], summary: dict) -> list[str]:
        """The plan's human summary (`format_plan`'s lines) as this mode tells it."""

    def complete(self, p: Plan, store: ResultStore, stored_ids: set[str]) -> bool:
        """Whether the store holds every row the sweep would write (its spec already stored as given;
        `stored_ids`: the run ids it holds)."""

    def planned_rows(self, p: Plan, store: ResultStore, settings: ExecutionSettings) -> set[str]:
        """The rows the sweep writes, as far as they are known before it runs."""

    def run(self, p: Plan, store: ResultStore, settings: ExecutionSettings, stock: Stock) -> ModeRun:
        """Train what the store lacks (`stock`: what it held readable when the sweep took its lock)."""

    def status(self, p: Plan, table: pd.DataFrame) -> dict:
        """Progress from the stored `table`: planned, counts, cells, trunk, and `lineages` (the ids whose
        curves count), with the mode's own entries."""


def tally(
    sweep_id: str,
    table: pd.DataFrame,
    run_ids: set[str],
    *,
    planned: int,
    trunk_planned: int,
    trunk_done: int,
) -> dict:
    """Status counts shared by the modes: the stored rows of `run_ids` per status and per cell, the missing
    ones, and the trunk evaluations."""
    done = table[table["run_id"].isin(run_ids)]
    counts = done["status"].value_counts().to_dict()
    counts["missing"] = max(planned - len(done), 0)
    cells = done.groupby(["model", "batch_size", "tokens"]).size().rename("runs_done").reset_index()
    trunk = {"planned": trunk_planned, "done": trunk_done, "missing": max(trunk_planned - trunk_done, 0)}
    return {
        "sweep_id": sweep_id,
        "planned": planned,
        "counts": counts,
        "cells": cells.to_dict("records"),
        "trunk": trunk,
    }
