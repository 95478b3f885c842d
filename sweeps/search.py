"""The Optuna mode of the power (a, b) search: one TPE study per cell, its trials run as Ray Tune trials.

A cell is (model, batch_size, seed, lr_max), as in the paper's Fig. 6 (the best a, b per batch size and T).
A trial samples a in a_range and b in b_range (continuous, TPE seeded per study) and trains one power lineage
over every token budget of the spec with `execute.run_job`: each budget's row goes to the store as soon as it
is final, under the run_id its config gives (`optuna_mode.trial_job`), exactly as in grid mode. The trial
reports `objective`: the mean held-out loss (nats/token) over the budgets, where a diverged budget counts as
divergence_factor * ln(vocab_size) (the divergence threshold over the loss of a uniform prediction): finite,
and above the loss of any budget that trained.

Each study is kept in an Optuna journal file next to the lineage checkpoints, but the store is the source
of truth. When a sweep starts, or starts again after its driver was killed, every study is first brought in
line with the stored rows: lineages with every budget stored are its completed trials (added from the rows
when the journal lacks them, e.g. when it was lost or the store is remote); trials a killed driver left
running are closed, and their (a, b), like those of lineages with only some budgets stored, are run first,
resuming from their checkpoints and training only the missing budgets. Then only n_trials minus the
completed lineages run. Finished trials are never recomputed. One driver per sweep at a time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import optuna
import pandas as pd
from optuna.trial import TrialState
from ray.tune.search import ConcurrencyLimiter, Searcher
from ray.tune.search.optuna import OptunaSearch

from powersweep.sweeps.execute import ExecutionSettings, fit, missing_budgets, run_job
from powersweep.sweeps.optuna_mode import Study, trial_job
from powersweep.sweeps.store import ResultStore

__all__ = [
    "METRIC",
    "StudySearch",
    "distributions",
    "divergence_penalty",
    "journal",
    "objective",
    "reconcile",
    "completed_trials",
    "SearchRun",
    "run_studies",
    "stored_run_ids",
    "stored_trials",
]

METRIC = "objective"  # what a trial reports: mean loss_eval over the budgets, nats/token
PARAMS = ("power_a", "power_b")  # Optuna parameter names: the results table's columns

Point = tuple[float, float]  # (a, b)


def objective(losses: Sequence[float], penalty: float) -> float:
    """Mean of the budgets' eval losses (nats/token);
    a non-finite loss (a diverged budget) counts as `penalty`."""
    return sum(loss if math.isfinite(loss) else penalty for loss in losses) / len(losses)


def divergence_penalty(study: Study) -> float:
    """What a diverged budget counts as:
    divergence_factor times the loss of a uniform prediction, ln(vocab)."""
    config = study.template.config
    return config.divergence_factor * math.log(config.proxy.vocab_size)


def stored_trials(study: Study, table: pd.DataFrame) -> dict[Point, dict[str, float]]:
    """The study's lineages in the store: (a, b) -> {run_id: loss_eval} of their stored budgets.

    A lineage is the study's when its lineage_id is the one `trial_job` gives for its (a, b) and the (a, b)
    lies in the study's ranges; the other columns only narrow the search.
    """
    config = study.template.config
    rows = table[
        table["schedule"].eq("power")
        & table["model"].eq(config.model)
        & table["batch_size"].eq(config.batch_size)
        & table["seed"].eq(config.seed)
        & table["lr_max"].eq(config.schedule.lr_max)
    ]
    found = {}
    for (a, b, lineage_id), group in rows.groupby(["power_a", "power_b", "lineage_id"]):
        job = trial_job(study, a, b)
        if job.lineage_id == lineage_id and _in_ranges(study, (a, b)):
            losses = dict(zip(group["run_id"], group["loss_eval"]))
            found[(float(a), float(b))] = {r: float(losses[r]) for r in job.run_ids if r in losses}
    return found


def stored_run_ids(studies: Sequence[Study], table: pd.DataFrame) -> set[str]:
    """run_ids of the stored rows that belong to the studies' trials."""
    return {r for s in studies for runs in stored_trials(s, table).values() for r in runs}


def known_row_ids(studies: Sequence[Study], settings: ExecutionSettings, table: pd.DataFrame) -> set[str]:
    """Every row (budget results and trunk evaluations) of every trial the studies know of: the (a, b) in the
    sweep's journal, in any state, and those of the lineages the store holds rows of. These are the search's
    planned rows, for the store's checks: an unreadable file among them is set aside and its run trained
    again, and each must be readable when the sweep ends. A trial the journal lost whose every file is
    unreadable is not known; its files are left in place, and a new sample takes its place."""
    storage = journal(settings)
    ids = set()
    for study in studies:
        points = set(stored_trials(study, table))
        try:
            trials = optuna.load_study(study_name=study.study_id, storage=storage).get_trials(deepcopy=False)
        except KeyError:  # no such study in the journal yet
            trials = []
        points |= {p for p in (_point(t.params) for t in trials) if None not in p}
        ids |= {r for point in points for r in trial_job(study, *point).row_ids}
    return ids


def _in_ranges(study: Study, point: Point) -> bool:
    return all(low <= x <= high for x, (low, high) in zip(point, (study.a_range, study.b_range)))


def distributions(study: Study) -> dict:
    """The search space: a and b uniform over the study's ranges."""
    return {
        name: optuna.distributions.FloatDistribution(*bounds)
        for name, bounds in zip(PARAMS, (study.a_range, study.b_range))
    }


def journal(settings: ExecutionSettings) -> optuna.storages.JournalStorage:
    """The sweep's Optuna journal (every study of the sweep), next to its lineage checkpoints."""
    path = os.path.join(settings.checkpoint_root, settings.sweep_id, "optuna.journal")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))


def reconcile(study: Study, storage, trials: dict[Point, dict[str, float]]) -> optuna.Study:
    """Load the study and bring it in line with the store's `trials` (see the module docstring).

    Returns the study with the (a, b) to run again enqueued: they are asked before any new sample.
    """
    complete = completed_trials(study, trials)
    loaded = optuna.create_study(
        storage=storage, study_name=study.study_id, direction="minimize", load_if_exists=True
    )
    again = _close_stale(loaded, complete) + [p for p in trials if p not in complete]
    told = {_point(t.params) for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}
    for point in complete.keys() - told:
        loaded.add_trial(
            optuna.trial.create_trial(
                params=dict(zip(PARAMS, point)), distributions=distributions(study), value=complete[point]
            )
        )
    waiting = {
        _point(t.system_attrs.get("fixed_params", {}))
        for t in loaded.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    }
    for point in dict.fromkeys(again):
        if point not in complete and point not in waiting:
            loaded.enqueue_trial(dict(zip(PARAMS, point)))
    return loaded


def completed_trials(study: Study, trials: dict[Point, dict[str, float]]) -> dict[Point, float]:
    """The objective of each of the store's `trials` that has every budget stored."""
    penalty, budgets = divergence_penalty(study), len(study.template.budgets)
    return {p: objective(list(runs.values()), penalty) for p, runs in trials.items() if len(runs) == budgets}


def _close_stale(loaded: optuna.Study, complete: dict[Point, float]) -> list[Point]:
    """Finish the trials a killed driver left running (from the store when it holds every budget).

    Returns the (a, b) of the others, and of completed trials whose rows the store lacks: to run again.
    """
    again = []
    for t in loaded.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)):
        point = _point(t.params)
        if t.state == TrialState.RUNNING and point in complete:
            loaded.tell(t.number, complete[point])
        elif t.state == TrialState.RUNNING:
            loaded.tell(t.number, state=TrialState.FAIL)
        if point not in complete and None not in point:
            again.append(point)
    return again


def _point(params: dict) -> Point:
    return tuple(params.get(name) for name in PARAMS)


class _Cell:
    """One study at run time: its Tune searcher, its stored rows, and the trials it still has to start."""

    def __init__(self, study: Study, storage, table: pd.DataFrame):
        trials = stored_trials(study, table)
        loaded = reconcile(study, storage, trials)
        self.study, self.penalty = study, divergence_penalty(study)
        self.stored = {r: loss for runs in trials.values() for r, loss in runs.items()}
        self.stored_ids = set(table["run_id"])  # trunk rows too: a lost one is trained again
        self.left = max(study.n_trials - len(completed_trials(study, trials)), 0)
        # Seeded by the study and its history: a resumed study draws new points, not its first ones again.
        seed = (int(study.study_id[:8], 16) + len(loaded.trials)) % 2**32
        sampler = optuna.samplers.TPESampler(seed=seed, constant_liar=study.concurrency > 1)
        searcher = OptunaSearch(
            distributions(study),
            metric=METRIC,
            mode="min",
            sampler=sampler,
            study_name=study.study_id,
            storage=storage,
        )
        self.searcher = ConcurrencyLimiter(searcher, max_concurrent=study.concurrency)

    def trial_config(self, params: dict) -> dict:
        """The trial's config: its lineage less the budgets already stored, and those budgets' losses."""
        job = trial_job(self.study, *(params[name] for name in PARAMS))
        todo = missing_budgets(job, self.stored_ids)
        again = set(todo.run_ids) if todo is not None else set()  # trained again: counted from the new rows
        earlier = tuple(self.stored[r] for r in job.run_ids if r in self.stored and r not in again)
        return {"job": todo, "earlier": earlier, "penalty": self.penalty}


class StudySearch(Searcher):
    """One Tune searcher over every cell's study: a suggestion comes from the next study that still needs
    trials and has a free slot, so the cells' trials share one Tuner and its resources."""

    def __init__(self, cells: Sequence[_Cell]):
        super().__init__(metric=METRIC, mode="min")
        self.cells, self.owner, self.turn = list(cells), {}, 0

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # each study has its own space; param_space holds only constants

    def suggest(self, trial_id: str) -> dict | str | None:
        if not any(cell.left for cell in self.cells):
            return Searcher.FINISHED
        for _ in range(len(self.cells)):
            cell, self.turn = self.cells[self.turn], (self.turn + 1) % len(self.cells)
            params = cell.searcher.suggest(trial_id) if cell.left else None
            if params is not None:
                cell.left -= 1
                self.owner[trial_id] = cell
                return cell.trial_config(params)
        return None  # every study that needs trials is at its concurrency: Tune asks again later

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.owner[trial_id].searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.owner.pop(trial_id).searcher.on_trial_complete(trial_id, result=result, error=error)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the studies live in their journal and the store."""


def _search_trial(params: dict) -> None:
    """One trial: train the missing budgets of its lineage, report the objective over all its budgets."""
    from ray import tune

    new = run_job(params["job"], params["settings"])[0] if params["job"] is not None else []
    losses = [*params["earlier"], *(result.loss_eval for result in new)]
    tune.report({METRIC: objective(losses, params["penalty"]), "budgets_done": len(new)})


@dataclass(frozen=True)
class SearchRun:
    """What `run_studies` did."""

    trials_run: int  # trials started: each trains one lineage (or its missing budgets)
    failed_trials: int  # trials that errored after their retries


def run_studies(studies: Sequence[Study], settings: ExecutionSettings) -> SearchRun:
    """Run the trials each study lacks (n_trials minus its completed lineages in the store) in one Tuner."""
    # one line per trial comes from the progress callback
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    table = ResultStore(settings.store_uri).read(sweep_id=settings.sweep_id).table
    storage = journal(settings)
    cells = [_Cell(study, storage, table) for study in studies]
    total = sum(cell.left for cell in cells)
    if not total:
        return SearchRun(0, 0)
    failed = fit(
        _search_trial,
        settings,
        param_space={"settings": settings},
        total=total,
        search_alg=StudySearch(cells),
        num_samples=total,
    )
    return SearchRun(total, failed)
