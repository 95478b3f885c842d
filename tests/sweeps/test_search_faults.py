"""An Optuna search's store gets the grid's checks: an unreadable row of a known trial is set aside (kept,
named by `status` and `resume`) and its lineage trained again, with the journal or without it."""

from __future__ import annotations

import os

import pytest
from test_faults import damage, drop_row, file_of
from test_search import tiny
from test_sweep import submitted

from powersweep.cli import main
from powersweep.sweeps.execute import ExecutionSettings
from powersweep.sweeps.plan import plan
from powersweep.sweeps.search import journal
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import _checkpoint_root

SPEC = tiny(n_trials=2)  # 2 cells x 2 trials x 2 budgets, and the trunk rows


def stored(storage: str):
    result = ResultStore(storage).read(sweep_id=SPEC["name"])
    assert result.duplicates_dropped == 0
    return result.table


@pytest.fixture(scope="module")
def finished(tmp_path_factory, local_ray):
    storage = submitted(tmp_path_factory.mktemp("search-faults"), SPEC)
    table = stored(storage)
    return storage, dict(zip(table["run_id"], table["loss_eval"]))


def journal_path(storage: str) -> str:
    return os.path.join(_checkpoint_root(storage), SPEC["name"], "optuna.journal")


@pytest.mark.slow
@pytest.mark.parametrize("journal_kept", [True, False], ids=["journal", "journal-lost"])
def test_a_lost_search_row_is_trained_again_and_no_new_trial_sampled(finished, journal_kept, capsys):
    """With its journal, a search that lost a lineage's file (all its rows) trains that trial again; without
    its journal, it knows a trial from its stored rows, so one lost row of it trains it again."""
    storage, reference = finished
    finals = sorted(
        r for r, phase in zip(*(stored(storage)[c] for c in ("run_id", "phase"))) if phase == "final"
    )
    victim = finals[0 if journal_kept else -1]
    path = file_of(storage, victim, sweep_id=SPEC["name"])  # its lineage's file
    name = os.path.basename(path)
    if journal_kept:
        damage(path, "truncated")
    else:
        drop_row(storage, victim, sweep_id=SPEC["name"])
        os.remove(journal_path(storage))
    assert main(["status", storage]) == 0
    assert (name in capsys.readouterr().out) == journal_kept  # status names the unreadable file

    assert main(["resume", storage]) == 0
    out, err = capsys.readouterr()
    assert ("moved aside an unreadable result file" in err and name in err) == journal_kept
    assert "ran 1 lineage (0 failed)" in out  # the victim's lineage, no new sample
    table = stored(storage)
    assert sorted(table["run_id"]) == sorted(reference)  # every row once, none new
    assert dict(zip(table["run_id"], table["loss_eval"])) == pytest.approx(reference, rel=1e-6)
    aside = [os.path.basename(uri) for uri in ResultStore(storage).set_aside_files(sweep_id=SPEC["name"])]
    assert any(a.startswith(name.removesuffix(".parquet") + ".") for a in aside) == journal_kept


def test_a_search_knows_the_rows_of_its_journals_trials_even_without_stored_rows(tmp_path):
    import optuna

    from powersweep.sweeps import search

    spec = spec_from_dict(SPEC)
    study = plan(spec).mode.studies[0]
    settings = ExecutionSettings(
        store_uri=str(tmp_path), sweep_id=spec.name, checkpoint_root=str(tmp_path / "ck")
    )
    loaded = optuna.create_study(storage=journal(settings), study_name=study.study_id, direction="minimize")
    loaded.add_trial(
        optuna.trial.create_trial(
            params={"power_a": 3.5, "power_b": -0.5}, distributions=search.distributions(study), value=3.0
        )
    )
    empty = ResultStore(str(tmp_path)).read(sweep_id=spec.name).table
    known = search.known_row_ids(plan(spec).mode.studies, settings, empty)
    assert known == set(search.trial_job(study, 3.5, -0.5).row_ids)
