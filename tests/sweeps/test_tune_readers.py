"""Ray Tune's own readers (ExperimentAnalysis, ResultGrid) on a sweep's Tune folder see its trials: named by
what they train, each reporting its stored rows' metrics."""

import os

import pytest
from tiny_sweep import TINY

from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import submit
from powersweep.sweeps.trials import trial_name

METRICS = ("model", "batch_size", "lr", "tokens", "phase", "loss_eval", "loss_train", "status", "seed")


@pytest.fixture(scope="module")
def swept(tmp_path_factory, local_ray):
    """The tiny sweep run once: (its store, its stored rows, its Tune folder)."""
    storage = str(tmp_path_factory.mktemp("tune") / "store")
    result = submit(spec_from_dict(TINY), storage=storage)
    assert result.failed_trials == 0 and result.lineages_run == 2
    table = ResultStore(storage).read(sweep_id="tiny").table
    return storage, table, os.path.join(storage, "checkpoints", "ray", "tiny")


@pytest.mark.slow
def test_experiment_analysis_gives_one_row_per_trial_with_its_last_stored_row(swept):
    from ray.tune import ExperimentAnalysis

    _, table, tune_dir = swept
    frame = ExperimentAnalysis(tune_dir).dataframe()
    assert len(frame) == 2 and set(frame["lineage_id"]) == set(table["lineage_id"])
    stored = table.set_index("run_id")
    for _, row in frame.iterrows():
        expected = stored.loc[row["run_id"]]
        assert row["phase"] == "final" and row["tokens"] == 2048  # a lineage's last row: its largest budget
        assert row["diverged"] == int(expected["status"] == "diverged")
        for name in METRICS:
            assert row[name] == expected[name], name
    assert sorted(frame["lr"]) == [0.004, 0.016]


@pytest.mark.slow
def test_each_trial_reports_every_stored_row_of_its_lineage(swept):
    from ray.tune import ExperimentAnalysis

    _, table, tune_dir = swept
    analysis = ExperimentAnalysis(tune_dir)
    for trial in analysis.trials:
        history = analysis.trial_dataframes[trial.trial_id]
        [lineage] = set(history["lineage_id"])
        rows = table[table["lineage_id"] == lineage].set_index("run_id")
        assert set(history["run_id"]) == set(rows.index) and len(rows) == 4  # 2 budgets, 2 trunk evaluations
        assert list(history["loss_eval"]) == [rows.loc[r, "loss_eval"] for r in history["run_id"]]


@pytest.mark.slow
def test_trials_are_named_and_filed_by_what_they_train(swept):
    from ray.tune import ExperimentAnalysis, ResultGrid

    _, table, tune_dir = swept
    analysis = ExperimentAnalysis(tune_dir)
    jobs = {job.lineage_id: job for job in plan(spec_from_dict(TINY)).jobs}
    for trial in analysis.trials:
        lineage = analysis.trial_dataframes[trial.trial_id]["lineage_id"].iloc[0]
        lr = jobs[lineage].config.schedule.lr
        assert str(trial) == f"cpu-xs_bs4_lr{lr:g}_s0_{lineage[:8]}" == trial_name([jobs[lineage]])
        assert os.path.basename(trial.path) == str(trial)
        assert os.path.isfile(os.path.join(trial.path, "progress.csv"))
    grid = ResultGrid(analysis)
    assert len(grid) == 2 and not grid.errors
    assert sorted(r.metrics["lr"] for r in grid) == [0.004, 0.016]
    assert sorted(grid.get_dataframe()["loss_eval"]) == sorted(
        table[table["phase"].eq("final") & table["tokens"].eq(2048)]["loss_eval"]
    )
