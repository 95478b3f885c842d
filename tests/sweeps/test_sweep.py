import pytest
import yaml
from tiny_sweep import TINY

from powersweep.cli import main
from powersweep.sweeps.spec import SpecError, spec_from_dict
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import status, submit


def submitted(parent, spec: dict) -> str:
    """`spec` submitted through the CLI into a new store under the folder `parent`; the store's path."""
    storage, spec_file = str(parent / "store"), parent / f"{spec['name']}.yaml"
    spec_file.write_text(yaml.safe_dump(spec))
    assert main(["submit", str(spec_file), "--storage", storage]) == 0
    return storage


@pytest.mark.slow
def test_submit_resume_and_extend_run_only_what_the_store_lacks(tmp_path, local_ray, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    storage = "store"  # relative: trials run in other working directories and must still find it
    first = submit(spec_from_dict(TINY), storage=storage)
    assert first.lineages_run == 2 and first.failed_trials == 0
    table = ResultStore(storage).read(sweep_id="tiny").table
    # + 4 trunk
    assert len(table) == 8 and table["run_id"].is_unique and (table["phase"] == "final").sum() == 4
    created = dict(zip(table["run_id"], table["created_at"]))

    assert main(["resume", storage]) == 0  # nothing missing: nothing runs
    assert "ran 0 lineages" in capsys.readouterr().out

    extended = {**TINY, "search": {**TINY["search"], "lr": [0.004, 0.016, 0.064]}}
    assert submit(spec_from_dict(extended), storage=storage).lineages_run == 1  # only the new lr
    table = ResultStore(storage).read(sweep_id="tiny").table
    assert len(table) == 12 and table["run_id"].is_unique
    # not recomputed
    assert all(table.set_index("run_id").loc[r, "created_at"] == t for r, t in created.items())
    s = status(storage)
    assert s["planned"] == 6 and s["counts"].get("missing") == 0
    assert s["curves"] == {"lineages": 3, "stored": 3, "on": True}  # each lineage's curve, beside its rows
    assert main(["status", storage]) == 0
    out = capsys.readouterr().out
    assert "6/6 runs done [####" in out and "curves: 3 of 3 lineages stored" in out


@pytest.mark.slow
def test_a_sweep_with_curves_off_stores_none_and_status_says_so(tmp_path, local_ray, capsys):
    result = submit(spec_from_dict({**TINY, "run": {"curves": False}}), storage=str(tmp_path / "store"))
    assert result.failed_trials == 0 and len(ResultStore(result.storage).read(sweep_id="tiny").table) == 8
    assert not (tmp_path / "store" / "curves").exists() and not (tmp_path / "store" / "tracking").exists()
    assert status(result.storage)["curves"] == {"lineages": 2, "stored": 0, "on": False}
    assert main(["status", result.storage]) == 0
    out = capsys.readouterr().out
    assert "curves: off (run.curves: false): none stored" in out and "lineages stored" not in out


def test_cli_spec_errors_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**TINY, "search": {**TINY["search"], "batchsize": [4]}}))
    assert main(["submit", str(bad), "--storage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "did you mean 'batch_size'" in err[0]
    assert not (tmp_path / "s").exists()  # nothing written
    assert main(["status", str(tmp_path / "nothing")]) == 2


@pytest.mark.slow
def test_a_packed_sweep_stores_the_rows_of_an_unpacked_one(tmp_path, local_ray):
    exact = {**TINY, "train": {**TINY["train"], "dtype": "float64"}}
    tables = {}
    for pack in (1, 2):
        result = submit(
            spec_from_dict({**exact, "run": {"pack": pack}}), storage=str(tmp_path / f"pack{pack}")
        )
        assert result.failed_trials == 0 and result.lineages_run == 2
        tables[pack] = (
            ResultStore(result.storage).read(sweep_id="tiny").table.set_index("run_id").sort_index()
        )
    solo, packed = tables[1], tables[2]
    # 2 lineages: 2 budgets, 2 forks
    assert list(packed.index) == list(solo.index) and len(solo) == 2 * (2 + 2)
    assert (packed["phase"] == solo["phase"]).all() and set(solo["phase"]) == {"final", "trunk"}
    assert packed["loss_eval"].to_numpy() == pytest.approx(solo["loss_eval"].to_numpy(), rel=1e-9)
    assert packed["loss_train"].to_numpy() == pytest.approx(solo["loss_train"].to_numpy(), rel=1e-9)
    s = status(str(tmp_path / "pack2"))
    assert s["counts"] == {"ok": 4, "missing": 0} and s["trunk"] == {"planned": 4, "done": 4, "missing": 0}


def test_gpu_shares_are_refused_or_corrected_before_anything_runs():
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.sweep import check_gpu_shares

    values = {
        "name": "g",
        "search": {"models": ["paper-12m"], "lr": [1e-3, 2e-3], "batch_size": [32], "tokens": ["4M"]},
        "train": {"seq_len": 1024},
    }
    auto = spec_from_dict({**values, "run": {"gpus_per_trial": "auto"}})
    with pytest.raises(
        SpecError, match=r"^run.gpus_per_trial=auto needs the GPU's memory: set run.gpu_memory"
    ):
        check_gpu_shares(auto, plan(auto))
    small = spec_from_dict({**values, "run": {"gpus_per_trial": 0.01, "gpu_memory": "80GiB"}})
    [note] = check_gpu_shares(small, plan(small))
    assert note.startswith("run.gpus_per_trial=0.01 is too small for paper-12m batch 32")
    tiny = spec_from_dict({**values, "run": {"gpus_per_trial": "auto", "gpu_memory": "1GiB"}})
    with pytest.raises(SpecError, match=r"^run.gpu_memory=1.0GiB: memory budget"):
        check_gpu_shares(tiny, plan(tiny))


def test_a_resume_reads_each_stored_file_at_most_twice_before_it_trains(tmp_path, monkeypatch):
    """Before its lock the sweep's rows are read once, for its checks; under it once more, to set unreadable
    files aside and plan from what stays readable; its curves once. Only the missing lineage trains."""
    import collections
    import posixpath

    from test_store import curve_point, minimal_row

    import powersweep.sweeps.execute as execution
    import powersweep.sweeps.sweep as sweep_module
    from powersweep.sweeps.plan import plan

    spec, storage = spec_from_dict(TINY), str(tmp_path / "store")
    store, [done, left] = ResultStore(storage), plan(spec).jobs
    rows = store.lineage_rows(sweep_id="tiny", lineage_id=done.lineage_id)
    for run_id in done.row_ids:
        rows.write([minimal_row(run_id, lineage_id=done.lineage_id)], name=run_id)
    store.write_curve([curve_point(1, lineage_id=done.lineage_id)], sweep_id="tiny", name=done.lineage_id)
    reads = collections.Counter()

    def counting(load):
        def counted(self, path, columns):
            reads[posixpath.basename(posixpath.dirname(posixpath.dirname(path)))] += 1  # results or curves
            return load(self, path, columns)

        return counted

    for method in ("_load_result", "_load_curve"):
        monkeypatch.setattr(ResultStore, method, counting(getattr(ResultStore, method)))

    class Trains(Exception):
        pass

    def execute(jobs, settings):
        raise Trains([m.lineage_id for j in jobs for m in j.members])

    monkeypatch.setattr(sweep_module, "_start_ray", lambda *args, **kwargs: None)
    monkeypatch.setattr(execution, "execute", execute)
    with pytest.raises(Trains) as trains:
        submit(spec, storage=storage)
    assert trains.value.args[0] == [left.lineage_id]
    assert reads == {"results": 2, "curves": 1}  # one file of rows, one curve


def test_rows_left_unwritten_by_a_failed_trial_say_so_in_the_singular(tmp_path):
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.sweep import SubmitResult, _settings, _unreadable

    spec, storage = spec_from_dict(TINY), str(tmp_path / "store")
    p = plan(spec)
    result = SubmitResult(plan=p, lineages_run=2, failed_trials=1, storage=storage, execution=None)
    lines = _unreadable(ResultStore(storage), p, result, _settings(spec, p, storage, None))
    assert sorted(line.split(":")[0] for line in lines) == sorted(p.row_ids)  # nothing was stored
    assert all(line.endswith(": 1 trial failed: see the errors above") for line in lines)
