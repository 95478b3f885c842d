"""Few files, the same rows: a lineage's rows in one file its trial rewrites, `compact` merging a sweep,
readers that see every row once whatever they race with (sweeps/store.py, sweeps/compaction.py)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading

import pandas as pd
import pytest
from test_store import T0, curve_point, full_row, minimal_row, partition_dir, put_raw, uri  # noqa: F401

from powersweep.store_layout import COMPACTED_PREFIX, LINEAGE_PREFIX
from powersweep.sweeps.storage import Storage
from powersweep.sweeps.store import ResultStore, StoreError


@pytest.fixture
def store(uri) -> ResultStore:  # noqa: F811
    return ResultStore(uri)


def names(store: ResultStore, sweep_id: str, folder: str = "results") -> list[str]:
    paths = Storage(store.uri).files(folder, sweep_id)
    return [p.rsplit("/", 1)[1] for p in paths]


def rows(lineage: str, count: int, *, first: int = 0) -> list[dict]:
    return [
        minimal_row(f"{lineage}-r{i}", lineage_id=lineage, tokens=1000 * (i + 1)) for i in range(first, count)
    ]


def write_each(store: ResultStore, sweep_id: str, written: list[dict]) -> None:
    for row in written:
        store.write([row], sweep_id=sweep_id, name=row["run_id"])


def write_lineage(store: ResultStore, sweep_id: str, lineage: str, written: list[dict]) -> None:
    writer = store.lineage_rows(sweep_id=sweep_id, lineage_id=lineage)
    for row in written:
        writer.write([row], name=row["run_id"])


def test_a_lineage_keeps_its_rows_in_one_file_rewritten_with_each_row(store):
    written = rows("a", 3)
    write_lineage(store, "s", "a", written)
    write_each(store, "s", rows("b", 2))
    assert names(store, "s") == ["b-r0.parquet", "b-r1.parquet", f"{LINEAGE_PREFIX}a.parquet"]
    write_each(store, "t", written)  # the same rows as row files: the same table
    ignore = ["sweep_id", "created_at"]
    lineage_file = store.read(sweep_id="s").table.drop(columns=ignore)
    lineage_file = lineage_file[lineage_file["lineage_id"].eq("a")].reset_index(drop=True)
    pd.testing.assert_frame_equal(lineage_file, store.read(sweep_id="t").table.drop(columns=ignore))
    assert store.has(sweep_id="s", name="a-r1") and not store.has(sweep_id="s", name="a-r9")
    assert store.stored_names(sweep_id="s", lineages=["a"]) == {"a-r0", "a-r1", "a-r2", "b-r0", "b-r1"}
    assert store.stored_names(sweep_id="s", lineages=[]) == {"b-r0", "b-r1"}  # other lineage files: unopened
    # the lineage trains again (a lost row): a new writer starts from its stored rows; a row written again
    # replaces its copy
    writer = store.lineage_rows(sweep_id="s", lineage_id="a")
    writer.write(rows("a", 4, first=3), name="a-r3")
    writer.write([{**written[1], "lr": 0.5}], name="a-r1")
    table = store.read(sweep_id="s").table
    assert len(table) == 6 and store.read(sweep_id="s").duplicates_dropped == 0
    assert table.set_index("run_id").loc["a-r1", "lr"] == 0.5
    assert names(store, "s") == ["b-r0.parquet", "b-r1.parquet", f"{LINEAGE_PREFIX}a.parquet"]
    # an invalid row writes nothing
    with pytest.raises(StoreError, match="name='a-r4'.*tokens"):
        writer.write([{**rows("a", 5, first=4)[0], "tokens": "many"}], name="a-r4")
    assert len(store.read(sweep_id="s").table) == 6


def test_a_lineage_writer_moves_an_unreadable_file_aside_first(store):
    write_lineage(store, "s", "a", rows("a", 2))
    put_raw(store, f"{partition_dir(store, 's')}/{LINEAGE_PREFIX}a.parquet", b"PAR1 truncated")
    write_lineage(store, "s", "a", rows("a", 3, first=2))
    assert store.read(sweep_id="s").table["run_id"].tolist() == ["a-r2"]  # the others: trained again
    [aside] = store.set_aside_files(sweep_id="s")
    assert aside.rsplit("/", 1)[1].startswith(f"{LINEAGE_PREFIX}a.")


def test_compact_leaves_the_files_of_lineages_still_training(store):
    write_lineage(store, "s", "a", rows("a", 3))
    write_lineage(store, "s", "b", rows("b", 3))
    write_each(store, "s", rows("c", 2))
    done = store.compact(sweep_id="s", finished={"a"})  # b still trains
    assert done.result_files == (4, 2) and done.rows == 8
    assert names(store, "s")[1:] == [f"{LINEAGE_PREFIX}b.parquet"]
    write_lineage(store, "s", "b", rows("b", 4, first=3))
    assert store.compact(sweep_id="s").result_files == (2, 1) and len(store.read(sweep_id="s").table) == 9


def test_compact_reads_the_same_rows_from_one_file_and_leaves_what_it_cannot_read(store):
    write_each(store, "s", rows("a", 5) + rows("b", 5))
    store.write([full_row("a-r2", lineage_id="a", loss_eval=9.0, created_at=T0)], sweep_id="s", name="old")
    store.write([minimal_row("other", lineage_id="c")], sweep_id="t", name="other")
    put_raw(store, f"{partition_dir(store, 's')}/broken.parquet", b"not parquet")
    before = store.read(sweep_id="s")
    assert before.duplicates_dropped == 1 and len(before.corrupt_files) == 1
    done = store.compact(sweep_id="s")
    assert done.result_files == (12, 2) and done.rows == 10 and len(done.merged) == 1
    files = names(store, "s")
    assert files[0] == "broken.parquet" and files[1].startswith(COMPACTED_PREFIX)  # kept for set_aside
    after = store.read(sweep_id="s")
    pd.testing.assert_frame_equal(after.table, before.table)
    assert after.duplicates_dropped == 0 and after.corrupt_files == before.corrupt_files
    assert store.read(sweep_id="t").table["run_id"].tolist() == ["other"]  # another sweep: untouched
    assert store.stored_names(sweep_id="s") == {f"{lin}-r{i}" for lin in "ab" for i in range(5)} | {"old"}
    assert store.compact(sweep_id="s").merged == ()  # one readable file: nothing to do
    moved = store.set_aside(sweep_id="s", names={"broken"})
    assert len(moved) == 1 and len(store.read(sweep_id="s").table) == 10


def test_a_damaged_compacted_file_is_set_aside_whatever_the_names(store):
    write_each(store, "s", rows("a", 3))
    store.compact(sweep_id="s")
    [compacted] = names(store, "s")
    put_raw(store, f"{partition_dir(store, 's')}/{compacted}", b"PAR1 truncated")
    assert store.read(sweep_id="s").table.empty and not store.has(sweep_id="s", name="a-r0")
    assert len(store.set_aside(sweep_id="s", names=set())) == 1 and names(store, "s") == []


def test_read_of_some_columns_gives_them_and_the_ids(store):
    write_each(store, "s", rows("a", 3))
    some = store.read(sweep_id="s", columns=["status", "tokens"]).table
    assert list(some.columns) == ["sweep_id", "run_id", "tokens", "status", "created_at"]
    full = store.read(sweep_id="s").table
    pd.testing.assert_frame_equal(some, full[some.columns])
    assert list(store.read(sweep_id="none", columns=["lr"]).table.columns) == [
        "sweep_id",
        "run_id",
        "lr",
        "created_at",
    ]
    with pytest.raises(StoreError, match=r"columns=\['loss'\]: not columns of the results"):
        store.read(columns=["loss"])


def test_merged_names_are_the_stores_own(store):
    with pytest.raises(StoreError, match="name='lineage-x'.*the store's merged files"):
        store.write([minimal_row()], sweep_id="s", name="lineage-x")


def lineage_points(lineage: str, steps, loss: float = 3.0) -> list[dict]:
    return [{**curve_point(s, loss=loss), "lineage_id": lineage} for s in steps]


def sorted_curves(table: pd.DataFrame) -> pd.DataFrame:
    keys = ["sweep_id", "lineage_id", "segment", "kind", "step"]
    return table.sort_values(keys).reset_index(drop=True)


def test_finished_curves_compact_into_one_file_and_a_retrained_lineage_keeps_every_point(store):
    for lineage in ("l1", "l2", "l3"):
        store.write_curve(lineage_points(lineage, range(1, 4)), sweep_id="s", name=lineage)
    before = store.read_curves(sweep_id="s").table
    done = store.compact(sweep_id="s", finished={"l1", "l2"})  # l3 still trains
    assert done.curve_files == (3, 2)
    assert sorted(names(store, "s", "curves"))[1:] == ["l3.parquet"]
    pd.testing.assert_frame_equal(sorted_curves(store.read_curves(sweep_id="s").table), sorted_curves(before))
    assert store.curve_names(sweep_id="s") == {"l1", "l2", "l3"}
    pd.testing.assert_frame_equal(
        store.read_curve(sweep_id="s", name="l1").to_pandas(),
        before[before["lineage_id"].eq("l1")].drop(columns="sweep_id").reset_index(drop=True),
    )
    # l1 trains again (a row was lost): its own file holds the compacted points and the new ones, and wins
    store.write_curve(lineage_points("l1", [3, 4], loss=2.0), sweep_id="s", name="l1")
    l1 = store.read_curve(sweep_id="s", name="l1").to_pandas()
    assert list(l1["step"]) == [1, 2, 3, 4] and list(l1["loss_train"]) == [3.0, 3.0, 2.0, 2.0]
    everything = store.read_curves(sweep_id="s").table
    assert len(everything) == 10 and not everything.duplicated(["lineage_id", "step", "kind"]).any()
    store.compact(sweep_id="s", finished={"l1", "l2", "l3"})
    assert len(names(store, "s", "curves")) == 1
    pd.testing.assert_frame_equal(
        sorted_curves(store.read_curves(sweep_id="s").table), sorted_curves(everything)
    )


def test_a_reader_that_lists_files_merged_meanwhile_lists_again(store, monkeypatch):
    write_each(store, "s", rows("a", 4))
    stale = Storage(store.uri).files("results", "s")
    store.compact(sweep_id="s")
    real = Storage.files
    calls = []

    def first_listing_stale(self, folder, sweep_id, **kwargs):
        calls.append(folder)
        return stale if len(calls) == 1 else real(self, folder, sweep_id, **kwargs)

    monkeypatch.setattr(Storage, "files", first_listing_stale)
    read = store.read(sweep_id="s")
    assert len(read.table) == 4 and read.corrupt_files == [] and len(calls) == 2


def race_writers_and_compact(store: ResultStore, *, per_sweep: int, lineages: int) -> dict[str, set[str]]:
    """Two sweeps write rows (each lineage's into its file, a row at a time) while `compact` runs in a loop,
    merging the finished lineages' files, and a reader reads; asserts every read held every row stored before
    it began and no file read as broken, and that the reads raced the writers. Returns the run ids each sweep
    stored."""
    stored: dict[str, set[str]] = {"s1": set(), "s2": set()}
    finished: dict[str, set[str]] = {"s1": set(), "s2": set()}
    writing_done = threading.Barrier(3)  # both writers, and the main thread
    errors: list[BaseException] = []
    failures: list[str] = []
    reads: list[int] = []

    def write(sweep_id: str) -> None:
        try:
            for lineage in range(lineages):
                lineage_id = f"{sweep_id}-l{lineage}"
                writer = store.lineage_rows(sweep_id=sweep_id, lineage_id=lineage_id)
                for row in rows(lineage_id, per_sweep // lineages):
                    writer.write([row], name=row["run_id"])
                    stored[sweep_id].add(row["run_id"])
                finished[sweep_id].add(lineage_id)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)
        finally:
            writing_done.wait()

    def compact_and_read(stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                for sweep_id in stored:
                    store.compact(sweep_id=sweep_id, finished=set(finished[sweep_id]))
                    expected = set(stored[sweep_id])  # rows stored before the read begins
                    read = store.read(sweep_id=sweep_id)
                    reads.append(len(expected))
                    missing = expected - set(read.table["run_id"])
                    if missing or read.corrupt_files:
                        failures.append(f"{sweep_id}: missing {sorted(missing)}, broken {read.corrupt_files}")
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    stop = threading.Event()
    threads = [threading.Thread(target=write, args=(s,)) for s in stored]
    threads.append(threading.Thread(target=compact_and_read, args=(stop,)))
    for thread in threads:
        thread.start()
    writing_done.wait()
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == [] and failures == []
    assert any(0 < n < per_sweep for n in reads)  # some reads raced the writers
    assert all(len(ids) == per_sweep for ids in stored.values())
    return stored


def test_compact_beside_two_writing_sweeps_loses_and_doubles_nothing(tmp_path):
    store = ResultStore(str(tmp_path / "store"))
    stored = race_writers_and_compact(store, per_sweep=60, lineages=6)
    for sweep_id in stored:
        store.compact(sweep_id=sweep_id)
        read = store.read(sweep_id=sweep_id)
        assert sorted(read.table["run_id"]) == sorted(stored[sweep_id])
        assert read.duplicates_dropped == 0 and len(names(store, sweep_id)) == 1


def test_created_at_decides_between_copies_across_merges(store):
    late = T0 + dt.timedelta(seconds=5)
    store.write([minimal_row("r", lineage_id="a", lr=0.1, created_at=late)], sweep_id="s", name="new")
    store.write([minimal_row("r", lineage_id="a", lr=0.2, created_at=T0)], sweep_id="s", name="old")
    assert store.read(sweep_id="s").table["lr"].tolist() == [0.1]
    store.compact(sweep_id="s")
    assert store.read(sweep_id="s").table["lr"].tolist() == [0.1]


@pytest.mark.slow
def test_compact_in_a_loop_beside_a_running_sweep_loses_and_doubles_nothing(tmp_path, local_ray):
    """`powersweep compact` runs again and again while a real sweep trains and writes: the sweep ends with
    every planned row once, the losses of a sweep left alone, and every curve point once."""
    from test_sweep import TINY

    from powersweep.sweeps.compaction import compact
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.spec import spec_from_dict
    from powersweep.sweeps.sweep import submit

    spec = spec_from_dict(TINY)
    alone = submit(spec, storage=str(tmp_path / "alone")).storage
    storage, done, errors, rounds = str(tmp_path / "compacted"), threading.Event(), [], []

    def compact_until_done() -> None:
        spec_file = tmp_path / "compacted" / "sweeps" / "tiny" / "spec.json"
        try:
            while not done.wait(0.05):  # paced, not timed: every round is checked at the end alike
                if spec_file.exists():  # written before any row
                    rounds.append(compact(storage, sweep_id="tiny"))
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    compactor = threading.Thread(target=compact_until_done)
    compactor.start()
    try:
        result = submit(spec, storage=storage)
    finally:
        done.set()
        compactor.join()
    assert errors == [] and result.failed_trials == 0 and result.unreadable == ()
    compact(storage, sweep_id="tiny")
    read, reference = ResultStore(storage).read(sweep_id="tiny"), ResultStore(alone).read(sweep_id="tiny")
    assert sorted(read.table["run_id"]) == sorted(plan(spec).row_ids) and read.duplicates_dropped == 0
    losses = read.table.set_index("run_id")["loss_eval"]
    assert losses.to_dict() == pytest.approx(
        reference.table.set_index("run_id")["loss_eval"].to_dict(), rel=1e-6
    )
    curves = ResultStore(storage).read_curves(sweep_id="tiny").table
    keys = ["lineage_id", "segment", "budget", "kind", "step"]
    assert not curves[keys].fillna(-1).duplicated().any()
    assert len(curves) == len(ResultStore(alone).read_curves(sweep_id="tiny").table)
    assert len(names(ResultStore(storage), "tiny")) == 1 and len(rounds) > 0


def test_taking_stock_sets_aside_what_set_aside_would_and_names_what_stays_readable(store):
    write_each(store, "s", rows("a", 3))
    write_lineage(store, "s", "b", rows("b", 2))
    store.write([minimal_row("other", lineage_id="c")], sweep_id="t", name="other")
    put_raw(store, f"{partition_dir(store, 's')}/broken.parquet", b"not parquet")  # planned: set aside
    put_raw(store, f"{partition_dir(store, 's')}/stray.parquet", b"not parquet")  # not planned: kept
    store.write_curve([curve_point(1)], sweep_id="s", name="lin-1")
    put_raw(store, f"{store._root}/curves/sweep_id=s/lin-2.parquet", b"not parquet")
    expected_ids = store.run_ids(sweep_id="s")
    stock = store.take_stock(sweep_id="s", names={"broken", "a-r0"})
    assert stock.run_ids == expected_ids == {"a-r0", "a-r1", "a-r2", "b-r0", "b-r1"}
    assert stock.curve_names == {"lin-1"} == store.curve_names(sweep_id="s")
    assert [m.split(" -> ")[0].rsplit("/", 1)[1] for m in stock.set_aside] == [
        "broken.parquet",
        "lin-2.parquet",
    ]
    assert "stray.parquet" in names(store, "s") and "broken.parquet" not in names(store, "s")
    assert (
        store.set_aside(sweep_id="s", names={"broken"}) == [] and store.set_aside_curves(sweep_id="s") == []
    )
    assert store.take_stock(sweep_id="s", names=set()) == dataclasses.replace(stock, set_aside=())
