"""Adaptive mode: per group (model, batch size, seed), lrs chosen round by round where they inform every
budget's lr_opt (the policy: sweeps/adaptive.py; its rounds at run time: sweeps/rounds.py).

The plan holds one `LrSearch` per group; its jobs are the first round (every start lr through the smallest
budget). Lineages get their ids as in grid mode, so the store tells every round what is done.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from powersweep.proxy_models.budgets import planned_tokens
from powersweep.sweeps.adaptive import Policy, first_round, lr_value
from powersweep.sweeps.lineages import LineageJob, grid_schedules, lineage_jobs, trajectories
from powersweep.sweeps.mode import ModeRun, tally
from powersweep.sweeps.spec import AdaptiveSpec

if TYPE_CHECKING:
    import pandas as pd

    from powersweep.proxy_models.train_config import TrainConfig
    from powersweep.sweeps.execute import ExecutionSettings
    from powersweep.sweeps.plan import Plan
    from powersweep.sweeps.spec import SweepSpec
    from powersweep.sweeps.store import ResultStore, Stock


@dataclass(frozen=True)
class LrSearch:
    """The adaptive lr search of one group (model, batch size, seed, train settings): its lineages are the
    template's config at the lrs the policy asks for (sweeps/adaptive.py), with ids as in grid mode."""

    template: TrainConfig  # the group's trajectory; its lr is replaced by each lattice value
    budgets: tuple[float, ...]  # token budgets, ascending
    policy: Policy
    lineage_tokens: tuple[tuple[float, int], ...]  # (T, tokens of one lineage through every budget up to T)

    @property
    def tokens_bound(self) -> float:
        """The most tokens the search may train: the lineage budget."""
        return self.policy.max_lineages * self.lineage_tokens[-1][1]

    def jobs(self, k: int, top: float) -> list[LineageJob]:
        """The lineage(s) of lattice index k through every budget up to `top` (cosine: one per budget)."""
        config = replace(self.template, schedule=replace(self.template.schedule, lr=lr_value(self.policy, k)))
        return lineage_jobs(config, tuple(t for t in self.budgets if t <= top))


def adaptive_policy(spec: AdaptiveSpec) -> Policy:
    """The search policy of an `adaptive` block: a lattice anchored at lr_range's low end."""
    step = spec.spacing_steps
    return Policy(
        anchor=spec.lr_range[0],
        resolution=spec.resolution,
        spacing_steps=step,
        start=tuple(j * step for j in range(len(spec.start_lrs))),
        max_lineages=spec.max_lineages,
        max_rounds=spec.max_rounds,
        side_points=spec.side_points,
    )


@dataclass(frozen=True)
class AdaptiveMode:
    name: ClassVar[str] = "adaptive"
    status_columns: ClassVar[None] = None  # its search reads the rows' values
    searches: tuple[LrSearch, ...]
    jobs: tuple[LineageJob, ...]  # the first round
    notes: tuple[str, ...] = ()
    searched_trials: int = 0  # later rounds are not counted up front: their bound is `tokens_bound`

    @classmethod
    def plan(cls, spec: SweepSpec, budgets: tuple[float, ...], *, gpu_bytes: int | None) -> AdaptiveMode:
        """One search per group; the jobs are the first round (every start lr through the smallest budget)."""
        policy, searches, jobs = adaptive_policy(spec.search.adaptive), [], []
        placeholder = spec.model_copy(
            update={"search": spec.search.model_copy(update={"lr": [policy.anchor]})}
        )
        for config in trajectories(placeholder, max(budgets), grid_schedules(placeholder)):  # one per group
            tokens = tuple((t, planned_tokens(config, [b for b in budgets if b <= t])) for t in budgets)
            search = LrSearch(config, budgets, policy, tokens)
            searches.append(search)
            jobs.extend(j for k, top in first_round(policy, budgets).items() for j in search.jobs(k, top))
        a = spec.search.adaptive
        note = (
            f"adaptive mode: round 1 trains {len(policy.start)} lrs per group ({a.spacing:g}x apart from "
            f"{a.lr_range[0]:g}) through the smallest budget; later rounds climb the budgets and add lrs "
            f"down to {a.resolution:.4g}x around each budget's optimum, "
            f"at most {policy.max_rounds} rounds and {a.max_lineages:g} lineages' tokens per group"
        )
        return cls(searches=tuple(searches), jobs=tuple(jobs), notes=(note,))

    def lineages(self) -> list[tuple[LineageJob, int]]:
        return [(j, 1) for j in self.jobs]

    def sized(self) -> tuple[LineageJob, ...]:
        return ()

    def summary(self) -> dict:
        return {"tokens_bound": sum(s.tokens_bound for s in self.searches)}

    def describe(self, lines: list[str], summary: dict) -> list[str]:
        sweep = summary["sweep_id"]
        groups = len(self.searches)
        return [
            f"sweep {sweep}, adaptive: round 1 is " + lines[0].removeprefix(f"sweep {sweep}: "),
            *lines[1:],
            f"tokens at most:        {summary['tokens_bound']:.4g} (the lineage budget of "
            f"{groups} group{'s' if groups > 1 else ''})",
        ]

    def complete(self, p: Plan, store: ResultStore, stored_ids: set[str]) -> bool:
        from powersweep.sweeps.rounds import searches_done  # done when every group's search has ended

        return searches_done(self.searches, store.read(sweep_id=p.sweep_id).table)

    def planned_rows(self, p: Plan, store: ResultStore, settings: ExecutionSettings) -> set[str]:
        return set(p.row_ids)

    def run(self, p: Plan, store: ResultStore, settings: ExecutionSettings, stock: Stock) -> ModeRun:
        from powersweep.sweeps.rounds import run_rounds  # rounds until every group's search ends

        rounds = run_rounds(self.searches, settings, pack=p.pack)
        return ModeRun(rounds.lineages_run, rounds.failed_trials, rounds.execution)

    def status(self, p: Plan, table: pd.DataFrame) -> dict:
        """The rows the searches have asked for so far (completed rounds and the one in progress) count as
        planned; per group, the rounds done and each budget's bracket."""
        from powersweep.sweeps.rounds import adaptive_status

        searches = adaptive_status(self.searches, table)
        trunk_done = int(table["run_id"].isin(searches["trunk_ids"]).sum())
        counted = tally(
            p.sweep_id,
            table,
            searches["run_ids"],
            planned=len(searches["run_ids"]),
            trunk_planned=len(searches["trunk_ids"]),
            trunk_done=trunk_done,
        )
        return {**counted, "adaptive": searches["groups"], "lineages": set(table["lineage_id"])}
