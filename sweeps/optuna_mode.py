"""Optuna mode: the power schedule's (a, b) searched by one TPE study per cell while the sweep runs.

A cell is (model, batch_size, seed, lr_max). A study's template is the cell's lineage at the centres of the
a and b ranges: it stands for the study's n_trials lineages in the plan's counts and memory checks (a
lineage's tokens do not depend on a, b). A trial's lineage gets its ids from the same scheme as a grid's
(`trial_job`), so its rows are found in the store like any other. The search itself runs in
sweeps/search.py (Optuna and Ray, imported when the sweep runs).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.sweeps.grid_mode import fixed_status
from powersweep.sweeps.lineages import LineageJob, lineage_job, schedule_settings, short_hash, trajectories
from powersweep.sweeps.mode import ModeRun

if TYPE_CHECKING:
    import pandas as pd

    from powersweep.sweeps.execute import ExecutionSettings
    from powersweep.sweeps.plan import Plan
    from powersweep.sweeps.spec import SweepSpec
    from powersweep.sweeps.store import ResultStore, Stock


@dataclass(frozen=True)
class Study:
    """One Optuna study of the power (a, b) search: n_trials lineages of `template`, each with its own a, b.

    The template's a, b are the centres of the ranges; a lineage's tokens do not depend on them.
    """

    study_id: str  # hash of the template and the ranges: another range starts another study
    template: LineageJob
    n_trials: int
    a_range: tuple[float, float]
    b_range: tuple[float, float]
    concurrency: int = 1  # trials of this study in flight at once


def trial_job(study: Study, a: float, b: float) -> LineageJob:
    """The lineage of one trial: the template with Power a, b; its ids follow from its config as in grid
    mode."""
    config = study.template.config
    return lineage_job(
        replace(config, schedule=replace(config.schedule, power_a=float(a), power_b=float(b))),
        study.template.budgets,
    )


@dataclass(frozen=True)
class OptunaMode:
    name: ClassVar[str] = "optuna"
    status_columns: ClassVar[None] = None  # its search reads the rows' values
    studies: tuple[Study, ...]
    notes: tuple[str, ...] = ()
    jobs: tuple[LineageJob, ...] = ()  # every trial is chosen while the sweep runs

    @classmethod
    def plan(cls, spec: SweepSpec, budgets: tuple[float, ...], *, gpu_bytes: int | None) -> OptunaMode:
        """One study per cell; its template's a, b (the ranges' centres) stand for each trial's."""
        s = spec.search
        centres = dict(power_a=sum(s.a_range) / 2, power_b=sum(s.b_range) / 2, **schedule_settings(spec))
        templates = [ScheduleConfig(lr_max=m, **centres) for m in s.lr_max]  # one per lr_max: a, b sampled
        studies = []
        for config in trajectories(spec, max(budgets), templates):
            template = lineage_job(config, budgets)
            study_id = short_hash(["optuna", template.lineage_id, s.a_range, s.b_range])
            studies.append(Study(study_id, template, s.n_trials, s.a_range, s.b_range, s.study_concurrency))
        note = f"optuna mode: {s.n_trials} (a, b) trials per cell are chosen while the sweep runs"
        return cls(studies=tuple(studies), notes=(note,))

    @property
    def searched_trials(self) -> int:
        return sum(s.n_trials for s in self.studies)

    def lineages(self) -> list[tuple[LineageJob, int]]:
        return [(s.template, s.n_trials) for s in self.studies]

    def sized(self) -> tuple[LineageJob, ...]:
        return tuple(s.template for s in self.studies)

    def summary(self) -> dict:
        return {}

    def describe(self, lines: list[str], summary: dict) -> list[str]:
        return lines

    def complete(self, p: Plan, store: ResultStore, stored_ids: set[str]) -> bool:
        return False  # the studies decide, once running, whether trials are left

    def planned_rows(self, p: Plan, store: ResultStore, settings: ExecutionSettings) -> set[str]:
        from powersweep.sweeps.search import known_row_ids  # imports Optuna and Ray

        return known_row_ids(self.studies, settings, store.read(sweep_id=settings.sweep_id).table)

    def run(self, p: Plan, store: ResultStore, settings: ExecutionSettings, stock: Stock) -> ModeRun:
        from powersweep.sweeps.execute import trial_gpus
        from powersweep.sweeps.search import run_studies  # imports Optuna and Ray

        if settings.gpu_memory_bytes is not None:  # every trial of a study has its template's shape
            settings = replace(settings, gpus_per_trial=trial_gpus(self.sized(), settings))
        search = run_studies(self.studies, settings)
        return ModeRun(search.trials_run, search.failed_trials, None)

    def status(self, p: Plan, table: pd.DataFrame) -> dict:
        from powersweep.sweeps.search import stored_run_ids

        return fixed_status(p, table, stored_run_ids(self.studies, table))
