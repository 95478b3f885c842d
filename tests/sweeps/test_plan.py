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
