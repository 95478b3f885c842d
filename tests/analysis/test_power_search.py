import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.power_search import power_search
from powersweep.analysis.synthetic import PlantedLaw, synthetic_power_table
from powersweep.analysis.table import load_table


@pytest.fixture(scope="module")
def search():
    return power_search(
        load_table(synthetic_power_table(PlantedLaw(a=4.0, b=-0.51), n_seeds=2, seed=3)), n_boot=500
    )


def test_planted_a_and_b_are_inside_the_overall_intervals(search):
    best = search.overall
    assert best.a_ci.contains(4.0) and best.b_ci.contains(-0.51)
    assert best.method.startswith("surface")
    assert best.b_ci.high - best.b_ci.low < 0.05  # b is pinned down...
    assert best.a_ci.low <= 3.5 and best.a_ci.high >= 4.5  # ...while a is not, as the paper's Fig. 5 shows


def test_each_group_has_a_best_with_intervals(search):
    groups = search.per_group
    assert len(groups) == 9 and (groups["n_runs"] == 50).all()
    assert groups["b_grid"].between(-0.6, -0.4).all()
    inside = (groups["b_low"] <= -0.51) & (-0.51 <= groups["b_high"])
    assert inside.mean() >= 0.75


def test_profile_of_b_is_sharper_than_of_a(search):
    runs = search.runs
    spread = {name: runs.groupby(name)["delta_loss"].min().max() for name in ("power_a", "power_b")}
    assert spread["power_b"] > 5 * spread["power_a"]


def test_a_diverged_run_is_never_the_best():
    table = synthetic_power_table(PlantedLaw(a=4.0, b=-0.51, noise_sd=0.0), tokens=(16e9,), batch_sizes=(64,))
    best = table["loss_eval"].idxmin()
    table.loc[best, ["status", "loss_eval"]] = ["diverged", table["loss_eval"].min() - 1.0]
    result = power_search(load_table(table), n_boot=0)
    group = result.per_group.iloc[0]
    assert (group["a_grid"], group["b_grid"]) != (table.loc[best, "power_a"], table.loc[best, "power_b"])
    assert group["n_diverged"] == 1


def test_too_few_points_fall_back_to_the_grid():
    table = synthetic_power_table(
        a_values=(4.0,), b_values=(-0.55, -0.5, -0.45), tokens=(16e9,), batch_sizes=(64,)
    )
    result = power_search(load_table(table), n_boot=100)
    assert result.per_group["method"].tolist() == ["grid"] and result.overall.method == "grid"
    assert np.isnan(result.overall.a_ci.low)


def test_no_power_runs_gives_none(paper_table):
    assert power_search(paper_table) is None


def test_failed_power_runs_are_ignored():
    table = synthetic_power_table(tokens=(16e9,), batch_sizes=(64,)).assign(status="failed")
    assert power_search(load_table(pd.concat([table.iloc[:0], table]))) is None
