import math
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from optuna.trial import TrialState

from powersweep.analysis import analyze, load_table
from powersweep.cli import main
from powersweep.sweeps import search
from powersweep.sweeps.execute import ExecutionSettings, missing_budgets, run_job
from powersweep.sweeps.optuna_mode import trial_job
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import _checkpoint_root, spec_path, status

SPECS = Path(__file__).parents[2] / "sweeps" / "specs"
A_RANGE, B_RANGE = (3.0, 5.0), (-0.6, -0.4)
TINY = {
    "name": "tiny-optuna",
    "search": {
        "models": ["cpu-xs"],
        "batch_size": [4, 8],
        "tokens": [1024, 2048],
        "mode": "optuna",
        "n_trials": 2,
        "a_range": list(A_RANGE),
        "b_range": list(B_RANGE),
    },
    "train": {
        "schedule": "power",
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
}


def tiny(**search) -> dict:
    return {**TINY, "search": {**TINY["search"], **search}}


def test_optuna_plan_costs_what_a_grid_of_as_many_points_costs():
    optuna_plan = plan(spec_from_dict(tiny(n_trials=4)))
    grid = tiny(mode="grid", power_a=[3.0, 3.5, 4.0, 4.5], power_b=[-0.5])
    grid_plan = plan(spec_from_dict(grid))
    summary, expected = optuna_plan.summary(), grid_plan.summary()
    assert summary["runs"] == 4 * 2 * 2 and summary["lineages"] == 4 * 2  # n_trials * cells (* budgets)
    for key in ("runs", "lineages", "tokens_independent", "tokens_planned", "ratio"):
        assert summary[key] == expected[key]
    assert (
        len(optuna_plan.mode.studies) == 2
        and not optuna_plan.jobs
        and "4 (a, b) trials per cell" in summary["notes"][0]
    )
    lr_max_grid = plan(spec_from_dict(tiny(lr_max=[0.01, 0.02])))
    assert len({s.study_id for s in lr_max_grid.mode.studies}) == 4  # lr_max is a dimension of the studies


def test_objective_is_the_mean_loss_with_a_finite_penalty_for_divergence():
    study = plan(spec_from_dict(TINY)).mode.studies[0]
    penalty = search.divergence_penalty(study)
    assert penalty == pytest.approx(2.0 * math.log(256))  # divergence_factor * ln(byte vocab)
    assert search.objective([3.0, 2.0], penalty) == 2.5
    assert search.objective([3.0, math.nan], penalty) == (3.0 + penalty) / 2


def rows(study, point, losses, **columns) -> list[dict]:
    job = trial_job(study, *point)
    config = job.config
    return [
        {
            "run_id": r,
            "lineage_id": job.lineage_id,
            "schedule": "power",
            "model": config.model,
            "batch_size": config.batch_size,
            "seed": config.seed,
            "lr_max": config.schedule.lr_max,
            "power_a": point[0],
            "power_b": point[1],
            "tokens": t,
            "loss_eval": loss,
            **columns,
        }
        for r, t, loss in zip(job.run_ids, job.budgets, losses)
    ]


def test_reconcile_rebuilds_a_lost_study_from_the_store_and_resumes_partial_trials():
    study, other = plan(spec_from_dict(TINY)).mode.studies
    table = pd.DataFrame(
        rows(study, (3.5, -0.5), [4.0, 3.0])
        + rows(study, (4.5, -0.45), [4.2])
        + rows(other, (4.0, -0.5), [4.1, 3.1])
        + rows(study, (6.0, -0.5), [4.0, 3.0])
    )
    table.loc[table["power_a"].eq(6.0), "lineage_id"] = "not-the-template"  # not a lineage of this study
    trials = search.stored_trials(study, table)
    assert set(trials) == {(3.5, -0.5), (4.5, -0.45)}
    storage = optuna.storages.InMemoryStorage()
    loaded = search.reconcile(study, storage, trials)  # a new storage: the journal was lost
    [complete] = loaded.get_trials(states=(TrialState.COMPLETE,))
    assert complete.params == {"power_a": 3.5, "power_b": -0.5} and complete.value == 3.5
    [waiting] = loaded.get_trials(states=(TrialState.WAITING,))
    assert waiting.system_attrs["fixed_params"] == {"power_a": 4.5, "power_b": -0.45}

    asked = loaded.ask(search.distributions(study))  # a driver took the waiting trial and was killed
    assert asked.params == {"power_a": 4.5, "power_b": -0.45}
    again = search.reconcile(study, storage, trials)
    states = [t.state for t in again.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.WAITING]  # nothing counted twice


def test_a_study_samples_the_same_points_again_from_the_same_history():
    study = plan(spec_from_dict(TINY)).mode.studies[0]

    def first_points(storage) -> list[tuple]:
        cell = search._Cell(study, storage, pd.DataFrame(rows(study, (3.5, -0.5), [4.0, 3.0])))
        configs = [cell.trial_config(cell.searcher.searcher.suggest(f"t{i}")) for i in range(3)]
        return [(c["job"].config.schedule.power_a, c["job"].config.schedule.power_b) for c in configs]

    points = first_points(optuna.storages.InMemoryStorage())
    assert points == first_points(optuna.storages.InMemoryStorage())
    assert all(A_RANGE[0] <= a <= A_RANGE[1] and B_RANGE[0] <= b <= B_RANGE[1] for a, b in points)
    assert len(set(points)) == 3


def by_cell(table: pd.DataFrame) -> dict:
    return table.groupby("batch_size")["lineage_id"].nunique().to_dict()


def kill_mid_search(study, settings) -> dict:
    """What a driver killed mid-search leaves: a finished trial, and a running one whose lineage stored its
    first budget only. Returns the killed trial's params."""
    journal = optuna.create_study(
        study_name=study.study_id, storage=search.journal(settings), direction="minimize"
    )
    finished = journal.ask(search.distributions(study))
    [results] = run_job(trial_job(study, *finished.params.values()), settings)
    journal.tell(finished, search.objective([r.loss_eval for r in results], search.divergence_penalty(study)))
    killed = journal.ask(search.distributions(study)).params
    job = trial_job(study, *killed.values())
    run_job(missing_budgets(job, {job.run_ids[-1], job.trunk_run_ids[-1]}), settings)  # its first budget only
    return killed


@pytest.mark.slow
def test_search_resumes_a_killed_driver_and_runs_n_trials_per_cell(tmp_path, local_ray, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec, storage = spec_from_dict(tiny(n_trials=3)), str(tmp_path / "store")
    studies = plan(spec).mode.studies  # batch sizes 4 and 8: the second starts from nothing
    settings = ExecutionSettings(
        store_uri=storage, sweep_id="tiny-optuna", checkpoint_root=_checkpoint_root(storage)
    )
    killed = kill_mid_search(studies[0], settings)
    ResultStore(storage).write_json(spec_path("tiny-optuna"), spec.to_dict())  # as submit does first
    before = ResultStore(storage).read(sweep_id="tiny-optuna").table.set_index("run_id")["created_at"]
    assert len(before) == 3 + 3  # 3 budget rows and the trunk rows the trunk passed on the way

    assert main(["resume", "store"]) == 0
    stored = ResultStore(storage).read(sweep_id="tiny-optuna").table
    assert stored["run_id"].is_unique and status(storage)["trunk"]["missing"] == 0
    table = stored[stored["phase"].eq("final")]
    assert len(table) == 3 * 2 * 2 and by_cell(table) == {4: 3, 8: 3}
    assert table["power_a"].between(*A_RANGE).all() and table["power_b"].between(*B_RANGE).all()
    # finished, not resampled
    assert set(trial_job(studies[0], *killed.values()).run_ids) <= set(table["run_id"])
    after = stored.set_index("run_id")["created_at"]
    assert (after[before.index] == before).all()  # no stored row recomputed
    assert status(storage)["counts"] == {"ok": 12, "missing": 0}

    histories = [
        optuna.load_study(study_name=s.study_id, storage=search.journal(settings)).trials for s in studies
    ]
    complete, fail = TrialState.COMPLETE, TrialState.FAIL
    assert [[t.state for t in h] for h in histories] == [[complete, fail, complete, complete], [complete] * 3]
    assert histories[0][2].params == killed  # the resumed trial ran first, then one new sample
    for study, history in zip(studies, histories):  # what the trials reported is what the store holds
        stored = search.stored_trials(study, table)
        penalty = search.divergence_penalty(study)
        for t in (t for t in history if t.state == complete):
            runs = stored[(t.params["power_a"], t.params["power_b"])]
            assert t.value == pytest.approx(search.objective(list(runs.values()), penalty), rel=1e-12)

    power = analyze(load_table("store/results"), n_boot=0).power  # the (a, b) search of analysis/
    assert len(power.per_group) == 2 * 2 and set(power.per_group["n_runs"]) == {3}
    assert power.per_group["a_grid"].between(*A_RANGE).all()


def test_paper_power_comment_switches_the_spec_to_optuna():
    text = (SPECS / "paper-power.yaml").read_text()
    switch = yaml.safe_load("\n".join(line[4:] for line in text.splitlines() if line.startswith("#   ")))
    values = yaml.safe_load(text)
    search = {k: v for k, v in values["search"].items() if k not in ("power_a", "power_b")} | switch
    summary = plan(spec_from_dict({**values, "search": search})).summary()
    assert (summary["runs"], summary["lineages"]) == (32 * 5 * 7, 32 * 5)
