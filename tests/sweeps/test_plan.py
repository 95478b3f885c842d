from pathlib import Path

import pytest

from sweeps.plan import plan
from sweeps.spec import load_spec, spec_from_dict

SPECS = Path(__file__).parents[2] / "sweeps" / "specs"


def test_paper_table2_grid_ratio_is_0552():
    p = plan(load_spec(str(SPECS / "paper-wsd.yaml")))
    summary = p.summary()
    assert summary["runs"] == 3 * 6 * 8 * 8 and summary["lineages"] == 3 * 6 * 8
    assert summary["ratio"] == pytest.approx(0.552, abs=5e-4)


def spec(**search):
    return spec_from_dict({"name": "t", "search": {"lr": [0.01, 0.02], "tokens": ["1M", "2M"], **search},
                           "train": {"seq_len": 64}})


def test_ids_are_deterministic_and_independent_of_other_grid_values():
    small, extended = plan(spec()), plan(spec(lr=[0.01, 0.02, 0.04], tokens=["1M", "2M", "4M"]))
    assert plan(spec()).jobs == small.jobs  # same spec, same ids
    old_runs = {r for j in small.jobs for r in j.run_ids}
    new_runs = {r for j in extended.jobs for r in j.run_ids}
    assert old_runs < new_runs and len(new_runs) == 9  # extending keeps every finished run_id
    assert len({j.lineage_id for j in extended.jobs}) == 3


def test_cosine_budgets_become_solo_lineages():
    p = plan(spec_from_dict({"name": "c", "search": {"lr": [0.01], "tokens": ["1M", "2M"]},
                             "train": {"schedule": "cosine", "seq_len": 64}}))
    assert len(p.jobs) == 2 and p.summary()["ratio"] == pytest.approx(1.0) and p.notes
    assert p.jobs[0].lineage_id != p.jobs[1].lineage_id


def test_trunk_row_ids_are_planned_and_independent_of_other_grid_values():
    small, extended = plan(spec()), plan(spec(lr=[0.01, 0.02, 0.04], tokens=["1M", "2M", "4M"]))
    job = small.jobs[0]
    seq = 16 * 64  # tokens per step
    assert job.trunk_tokens == tuple(int(t * 0.9 // seq) * seq for t in job.budgets)  # the forks, decay 10%
    assert len(set(job.trunk_run_ids)) == 2 and not set(job.trunk_run_ids) & set(job.run_ids)
    assert small.row_ids == {r for j in small.jobs for r in j.run_ids + j.trunk_run_ids}
    assert small.row_ids < extended.row_ids  # trunk ids, like run ids, survive extending the grid


def test_packs_group_schedule_variants_and_keep_ids():
    values = {"name": "p", "search": {"lr": [0.01, 0.02, 0.04], "batch_size": [8, 16], "tokens": ["1M", "2M"]},
              "train": {"seq_len": 64}}
    solo = plan(spec_from_dict(values))
    packed = plan(spec_from_dict({**values, "run": {"pack": 2}}))
    assert packed.jobs == solo.jobs and packed.row_ids == solo.row_ids  # ids do not depend on pack
    assert [len(t.members) for t in packed.trials] == [2, 1, 2, 1] and len(solo.trials) == 6
    for trial in packed.trials:  # one batch size per pack, the lrs differ
        assert len({m.config.batch_size for m in trial.members}) == 1
        assert len({m.config.schedule.lr for m in trial.members}) == len(trial.members)
    power = plan(spec_from_dict({"name": "w", "search": {"power_a": [3.0, 4.0], "power_b": [-0.5], "tokens": ["1M"],
                                                         "lr_max": [0.01, 0.02]},
                                 "train": {"schedule": "power", "seq_len": 64}, "run": {"pack": 8}}))
    assert [len(t.members) for t in power.trials] == [4]


def test_ids_of_stored_sweeps_do_not_change_with_execution_settings():
    # Values computed before the head, checkpointing and memory-budget fields existed: a store written
    # then must still find its rows.
    job = plan(spec_from_dict({"name": "t", "search": {"lr": [0.01], "tokens": ["1M", "2M"]},
                               "train": {"seq_len": 64}})).jobs[0]
    assert job.lineage_id == "b73efed7e3872189"
    assert job.run_ids == ("fb9298ccb8baed24", "986a1cf497d913ee")
