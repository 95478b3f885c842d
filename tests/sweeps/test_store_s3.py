"""The results store, its curves and the sweep lock against a real S3 server (moto's, on loopback:
tests/s3_server.py), with the requests each costs: few files, few requests (store_layout, sweeps/store.py).

Run with ``pytest -s`` to see the request counts measured."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest
from test_compaction import (
    lineage_points,
    race_writers_and_compact,
    rows,
    sorted_curves,
    write_each,
    write_lineage,
)
from test_store import T0, minimal_row

from powersweep.store_layout import COMPACTED_PREFIX, sources
from powersweep.sweeps.compaction import compact
from powersweep.sweeps.lock import SweepLock, SweepLockError
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.storage import Storage
from powersweep.sweeps.store import ResultStore
from powersweep.sweeps.sweep import spec_path, status


def listed(store: ResultStore, sweep_id: str, folder: str = "results") -> list[str]:
    """The names of the objects in the sweep's partition of ``folder``, as S3 lists them (a directory marker
    that pyarrow leaves after a delete is no file)."""
    base = f"{store.results_dir.rsplit('/', 1)[0]}/{folder}/sweep_id={sweep_id}"
    infos = store.filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    return sorted(info.base_name for info in infos if info.is_file)


def every_object(store: ResultStore) -> list[str]:
    """Every object under the store's root, relative to it: no temporary file or other leftover hides."""
    root = store.results_dir.rsplit("/", 1)[0]
    infos = store.filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(info.path.removeprefix(f"{root}/") for info in infos if info.is_file)


def footer_sources(store: ResultStore, sweep_id: str, name: str, folder: str = "results") -> frozenset[str]:
    """The names a stored file holds: its own, or a merged file's list from its footer."""
    path = f"{store.results_dir.rsplit('/', 1)[0]}/{folder}/sweep_id={sweep_id}/{name}"
    with store.filesystem.open_input_file(path) as handle:
        return sources(name.removesuffix(".parquet"), pq.ParquetFile(handle).schema_arrow.metadata)


def in_threads(function, items) -> None:
    """``function`` over ``items`` side by side, as a sweep's trials run."""
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(function, items))


# -- rows ----------------------------------------------------------------------------------------------------


def test_rows_read_the_same_from_lineage_files_row_files_and_a_compacted_file(s3_server):
    store = ResultStore(s3_server.bucket())
    sizes = {"a": 4, "b": 3, "c": 2}
    by_lineage = {lineage: [r["run_id"] for r in rows(lineage, n)] for lineage, n in sizes.items()}
    every_name = {name for names in by_lineage.values() for name in names}
    written = [
        {**row, "loss_eval": 3.0 + i / 10, "lr": 0.01 * (i + 1), "created_at": T0}
        for i, row in enumerate(r for lineage, n in sizes.items() for r in rows(lineage, n))
    ]
    for lineage in ("a", "b"):  # as trials write: a lineage's rows in its file, one row at a time
        write_lineage(store, "s", lineage, [r for r in written if r["lineage_id"] == lineage])
    write_each(store, "s", [r for r in written if r["lineage_id"] == "c"])  # ResultStore.write: a file each
    write_each(store, "u", written)  # every row its own file: the same rows
    store.write([minimal_row("other", lineage_id="x")], sweep_id="t", name="other")  # another sweep

    assert listed(store, "s") == ["c-r0.parquet", "c-r1.parquet", "lineage-a.parquet", "lineage-b.parquet"]
    assert footer_sources(store, "s", "lineage-a.parquet") == set(by_lineage["a"])
    before = store.read(sweep_id="s")
    assert before.corrupt_files == [] and before.duplicates_dropped == 0 and len(before.table) == 9
    pd.testing.assert_frame_equal(
        before.table.drop(columns="sweep_id"), store.read(sweep_id="u").table.drop(columns="sweep_id")
    )

    def same_rows_and_names(*, in_lineage_files: set[str]) -> None:
        after = store.read(sweep_id="s")
        pd.testing.assert_frame_equal(after.table, before.table)
        assert after.corrupt_files == [] and after.duplicates_dropped == 0
        assert store.stored_names(sweep_id="s") == every_name
        assert store.stored_names(sweep_id="s", lineages=sizes) == every_name
        # of the lineage files only those asked about are opened; row files and compacted ones always count
        assert store.stored_names(sweep_id="s", lineages=[]) == every_name - in_lineage_files
        assert all(store.has(sweep_id="s", name=name) for name in every_name)
        assert not store.has(sweep_id="s", name="a-r9") and not store.has(sweep_id="s", name="other")

    same_rows_and_names(in_lineage_files={*by_lineage["a"], *by_lineage["b"]})

    # compact: one file holds every write of the sweep
    done = store.compact(sweep_id="s")
    assert done.result_files == (4, 1) and done.rows == 9 and done.curve_files == (0, 0)
    [compacted] = listed(store, "s")
    assert compacted.startswith(COMPACTED_PREFIX) and len(done.merged) == 1
    assert footer_sources(store, "s", compacted) == every_name  # the row files' names, not the lineages'
    same_rows_and_names(in_lineage_files=set())  # the compacted file counts
    assert store.compact(sweep_id="s").merged == ()  # one file: nothing to do
    assert listed(store, "s") == [compacted]
    assert store.read(sweep_id="t").table["run_id"].tolist() == ["other"]  # the other sweep: untouched
    assert [o for o in every_object(store) if "sweep_id=u/" not in o] == [
        f"results/sweep_id=s/{compacted}",
        "results/sweep_id=t/other.parquet",
    ]

    # a row written after the compaction sits beside it, and the next compaction takes it in
    store.write([minimal_row("d-r0", lineage_id="d")], sweep_id="s", name="d-r0")
    assert listed(store, "s") == sorted([compacted, "d-r0.parquet"])
    assert store.stored_names(sweep_id="s") == every_name | {"d-r0"}
    assert store.compact(sweep_id="s").result_files == (2, 1)
    final = store.read(sweep_id="s").table
    pd.testing.assert_frame_equal(final[final["run_id"].ne("d-r0")].reset_index(drop=True), before.table)
    assert len(listed(store, "s")) == 1 and store.has(sweep_id="s", name="d-r0")


# -- curves --------------------------------------------------------------------------------------------------


def test_finished_curves_compact_into_one_object_and_a_retrained_lineage_keeps_every_point(s3_server):
    store = ResultStore(s3_server.bucket())
    for lineage in ("l1", "l2", "l3"):
        store.write_curve(lineage_points(lineage, range(1, 4)), sweep_id="s", name=lineage)
    assert listed(store, "s", "curves") == ["l1.parquet", "l2.parquet", "l3.parquet"]
    before = store.read_curves(sweep_id="s").table
    assert len(before) == 9

    done = store.compact(sweep_id="s", finished={"l1", "l2"})  # l3 still trains
    assert done.curve_files == (3, 2) and done.result_files == (0, 0)
    compacted, own = listed(store, "s", "curves")
    assert compacted.startswith(COMPACTED_PREFIX) and own == "l3.parquet"
    assert footer_sources(store, "s", compacted, "curves") == {"l1", "l2"}
    read = store.read_curves(sweep_id="s")
    assert read.corrupt_files == []
    pd.testing.assert_frame_equal(sorted_curves(read.table), sorted_curves(before))
    assert (
        store.curve_names(sweep_id="s") == {"l1", "l2", "l3"} and store.unreadable_curves(sweep_id="s") == []
    )
    pd.testing.assert_frame_equal(
        store.read_curve(sweep_id="s", name="l1").to_pandas(),
        before[before["lineage_id"].eq("l1")].drop(columns="sweep_id").reset_index(drop=True),
    )

    # l1 trains again (a row was lost): its own object holds the compacted points and the new ones, and wins
    store.write_curve(lineage_points("l1", [3, 4], loss=2.0), sweep_id="s", name="l1")
    assert listed(store, "s", "curves") == sorted([compacted, "l1.parquet", "l3.parquet"])
    l1 = store.read_curve(sweep_id="s", name="l1").to_pandas()
    assert list(l1["step"]) == [1, 2, 3, 4] and list(l1["loss_train"]) == [3.0, 3.0, 2.0, 2.0]
    everything = store.read_curves(sweep_id="s").table
    assert len(everything) == 10 and not everything.duplicated(["lineage_id", "step", "kind"]).any()

    store.compact(sweep_id="s", finished={"l1", "l2", "l3"})
    [last] = listed(store, "s", "curves")
    assert last.startswith(COMPACTED_PREFIX) and last != compacted
    assert footer_sources(store, "s", last, "curves") == {"l1", "l2", "l3"}
    pd.testing.assert_frame_equal(
        sorted_curves(store.read_curves(sweep_id="s").table), sorted_curves(everything)
    )
    assert list(store.read_curve(sweep_id="s", name="l1").to_pandas()["loss_train"]) == [3.0, 3.0, 2.0, 2.0]
    assert every_object(store) == [f"curves/sweep_id=s/{last}"]


# -- the sweep lock ------------------------------------------------------------------------------------------


def claim_file(uri: str, sweep_id: str) -> tuple[pafs.FileSystem, str]:
    storage = Storage(uri)
    return storage.fs, storage.path(f"sweeps/{sweep_id}/driver.lock")


def test_the_lock_is_a_claim_object_that_a_second_driver_is_refused_and_that_goes_on_exit(s3_server):
    uri = s3_server.bucket()
    filesystem, claim = claim_file(uri, "s")
    with SweepLock(uri, "s") as lock:
        assert lock.previous is None
        assert filesystem.get_file_info(claim).is_file
        held = ResultStore(uri).read_json("sweeps/s/driver.lock")
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        holder = f"pid {os.getpid()} on host {socket.gethostname()}"
        with pytest.raises(SweepLockError, match=f"being run by another driver, {holder}"):
            SweepLock(uri, "s").check()
        with pytest.raises(SweepLockError, match=f"being run by another driver, {holder}.*wait for it"):
            with SweepLock(uri, "s"):
                pass
        lock.check()  # its own claim: not another driver's
        assert filesystem.get_file_info(claim).is_file  # the refused ones took nothing
        with SweepLock(uri, "other"):  # another sweep: its own claim
            pass
    assert filesystem.get_file_info(claim).type == pafs.FileType.NotFound
    SweepLock(uri, "s").check()
    with SweepLock(uri, "s") as again:
        assert again.previous is None and filesystem.get_file_info(claim).is_file
    assert filesystem.get_file_info(claim).type == pafs.FileType.NotFound
    assert ResultStore(uri).sweep_ids() == []  # a claim makes no sweep


def test_a_dead_drivers_claim_is_taken_over_and_another_hosts_is_refused_naming_the_object(s3_server):
    uri = s3_server.bucket()
    store = ResultStore(uri)
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead = {"host": socket.gethostname(), "pid": int(ended.stdout), "process_start": 0.0, "token": "dead"}
    store.write_json("sweeps/s/driver.lock", dead)
    SweepLock(uri, "s").check()  # a dead holder holds nothing
    with SweepLock(uri, "s") as lock:
        assert lock.previous == dead
    elsewhere = {"host": "another-host", "pid": 1, "process_start": 0.0, "since": "then", "token": "t"}
    store.write_json("sweeps/s/driver.lock", elsewhere)
    for attempt in (lambda: SweepLock(uri, "s").check(), lambda: SweepLock(uri, "s").__enter__()):
        with pytest.raises(SweepLockError, match="pid 1 on host another-host") as refused:
            attempt()
        # whether that driver is gone only a person can tell: the message names the object to delete, by a
        # URI that opens it (the store URI's query, with the endpoint and region, stays at the end)
        named = str(refused.value).split("if that driver is gone, delete ", 1)[1].split(";", 1)[0]
        filesystem, path = pafs.FileSystem.from_uri(named)
        assert path == claim_file(uri, "s")[1], named
        assert filesystem.get_file_info(path).is_file
    assert store.read_json("sweeps/s/driver.lock") == elsewhere  # refused: the claim is still the other's


# -- request counts ------------------------------------------------------------------------------------------


def test_a_compacted_sweep_is_read_in_a_handful_of_requests_not_one_per_row(s3_server):
    store = ResultStore(s3_server.bucket())
    lineages, per_lineage = 20, 6
    n = lineages * per_lineage
    in_threads(lambda lineage: write_each(store, "s", rows(f"l{lineage}", per_lineage)), range(lineages))
    assert len(listed(store, "s")) == n

    with s3_server.requests() as before:
        loose = store.read(sweep_id="s", columns=["status"])
    # one listing, then every one of the N files: its size (HEAD), its footer and its columns (GETs)
    print(f"\nread(columns=['status']) of {n} row files: {before.total} requests {dict(before.by_kind)}")
    assert len(loose.table) == n and before.total >= n
    assert before.by_kind["ListObjectsV2"] == 1 and before.by_kind["HeadObject"] == n

    with s3_server.requests() as compacting:
        done = store.compact(sweep_id="s")
    print(f"compact of {n} row files: {compacting.total} requests {dict(compacting.by_kind)}")
    assert done.result_files == (n, 1) and done.rows == n

    with s3_server.requests() as after:
        compacted = store.read(sweep_id="s", columns=["status"])
    print(f"read(columns=['status']) of the compacted file: {after.total} requests {dict(after.by_kind)}")
    pd.testing.assert_frame_equal(compacted.table, loose.table)
    # pyarrow reads one file as: one LIST of the partition (at most 1000 keys a page: one page here), a HEAD
    # (open_input_file asks its size), a ranged GET of its tail (the footer) and a ranged GET of the columns
    # asked for (measured: exactly 1 + 1 + 2 with pyarrow 26). 6 leaves room for a footer larger than
    # pyarrow's first read of the tail and a column read split in two; one file per row would be >= N.
    assert after.by_kind["ListObjectsV2"] == 1 and after.by_kind["HeadObject"] == 1
    assert set(after.by_kind) == {"ListObjectsV2", "HeadObject", "GetObject"} and after.total <= 6

    with s3_server.requests() as asked:
        assert store.stored_names(sweep_id="s") == {f"l{i}-r{j}" for i in range(lineages) for j in range(6)}
        assert store.has(sweep_id="s", name="l3-r2")  # its own file is gone: one more HEAD, then as above
    print(f"stored_names + has on the compacted file: {asked.total} requests {dict(asked.by_kind)}")
    assert asked.total <= 2 * 6 + 1  # each a read of the one file (as above), and has() a HEAD of its own


GRID = {
    "name": "grid",
    "search": {
        "models": ["cpu-xs"],
        "batch_size": [4],
        "lr": [0.001 * 2**i for i in range(10)],
        "tokens": [1024, 2048],
        "seeds": [0, 1, 2],
    },
    "train": {
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
}


def planned_rows(job) -> list[dict]:
    """The rows a lineage's trial stores: a 'final' row per budget and a 'trunk' row per fork (synthetic)."""
    config = job.config
    common = {
        "lineage_id": job.lineage_id,
        "model": config.model,
        "batch_size": config.batch_size,
        "lr": config.schedule.lr,
        "seed": config.seed,
        "status": "ok",
        "seq_len": config.proxy.seq_len,
        "schedule": "wsd",
    }
    finals = [
        {**common, "run_id": run_id, "tokens": tokens, "phase": "final", "loss_eval": 3.0 + i / 10}
        for i, (tokens, run_id) in enumerate(zip(job.budgets, job.run_ids))
    ]
    trunks = [
        {**common, "run_id": run_id, "tokens": tokens, "phase": "trunk", "loss_eval": 3.5 - i / 10}
        for i, (tokens, run_id) in enumerate(zip(job.trunk_tokens, job.trunk_run_ids))
    ]
    return finals + trunks


def test_status_of_a_compacted_sweep_costs_a_handful_of_requests_not_one_per_row(s3_server):
    spec = spec_from_dict(GRID)
    p = plan(spec)
    lineages, row_count = len(p.jobs), len(p.row_ids)
    assert lineages == 30 and row_count == 120 and p.runs == 60 and p.trunk_rows == 60

    def stored(write) -> tuple[str, ResultStore]:
        uri = s3_server.bucket()
        store = ResultStore(uri)
        store.write_json(spec_path(spec.name), spec.to_dict())
        in_threads(lambda job: write(store, job), p.jobs)
        return uri, store

    # as `ResultStore.write` stores rows: each its own file
    uri, _ = stored(lambda store, job: write_each(store, spec.name, planned_rows(job)))
    with s3_server.requests() as loose:
        first = status(uri)
    assert first["planned"] == 60 and first["counts"] == {"ok": 60, "missing": 0}
    assert first["trunk"] == {"planned": 60, "done": 60, "missing": 0} and first["unreadable_files"] == []

    # as the trials store them: a lineage's rows in its own file
    uri, store = stored(lambda store, job: write_lineage(store, spec.name, job.lineage_id, planned_rows(job)))
    assert len(listed(store, spec.name)) == lineages
    with s3_server.requests() as merged:
        assert status(uri) == first

    with s3_server.requests() as compacting:
        done = compact(uri, sweep_id=spec.name)
    assert done.result_files == (lineages, 1) and done.rows == row_count
    assert len(listed(store, spec.name)) == 1

    with s3_server.requests() as compacted:
        assert status(uri) == first
    print(
        f"\nstatus of {row_count} rows in {lineages} lineages: "
        f"one file per row {loose.total} requests {dict(loose.by_kind)}; "
        f"a file per lineage {merged.total} {dict(merged.by_kind)}; "
        f"compacted {compacted.total} {dict(compacted.by_kind)} "
        f"(compact itself: {compacting.total} {dict(compacting.by_kind)})"
    )
    assert loose.total >= row_count and merged.total > lineages
    # the target. Measured 12 with pyarrow 26: the stored spec (a LIST of sweeps/, a HEAD to find
    # spec.json, a HEAD and a GET to read it), the one file of rows (LIST, HEAD, 2 GETs), and LISTs of the
    # curves and the set-aside files (two each: unreadable_curves and curve_names, set_aside_files and
    # replaced list them separately). None of it grows with the rows.
    assert compacted.total < 20
    assert len({r.path for r in compacted.requests if "/results/" in r.path}) == 1  # one object of rows


# -- concurrent writers --------------------------------------------------------------------------------------


class MergedWhileOpen:
    """The reader's filesystem, but the first time ``path`` is opened, ``merge`` runs (another process merging
    the file away) after the open (S3: a HEAD, which finds the object) and before a byte is read (GETs)."""

    def __init__(self, filesystem: pafs.FileSystem, path: str, merge):
        self._filesystem, self._path, self._merge = filesystem, path, merge

    def open_input_file(self, path: str):
        handle = self._filesystem.open_input_file(path)
        if path == self._path and self._merge:
            self._merge()
            self._merge = None
        return handle

    def __getattr__(self, name):
        return getattr(self._filesystem, name)


def compact_while_written_again(s3_server, monkeypatch) -> tuple[ResultStore, list]:
    """A store where a trial writes its row ``r`` again (loss_eval 3.0, then 4.0) just after `compact` read
    it, and the (size, mtime) of the row file before and after it was written again."""
    uri = s3_server.bucket()
    store, trial = ResultStore(uri), ResultStore(uri)
    path = f"{store.results_dir}/sweep_id=s/r.parquet"
    store.write([minimal_row("r", lineage_id="a", loss_eval=3.0)], sweep_id="s", name="r")
    store.write([minimal_row("q", lineage_id="b", loss_eval=3.0)], sweep_id="s", name="q")
    stats = [Storage(uri).stat(path)]
    load = store._load_result

    def load_then_write_again(loaded_path, columns):
        loaded = load(loaded_path, columns)
        if loaded_path == path and len(stats) == 1:  # compact has read the old row: the trial writes again
            trial.write([minimal_row("r", lineage_id="a", loss_eval=4.0)], sweep_id="s", name="r")
            stats.append(Storage(uri).stat(path))
        return loaded

    with monkeypatch.context() as patched:
        patched.setattr(store, "_load_result", load_then_write_again)
        store.compact(sweep_id="s")
    return store, stats


def test_a_row_written_again_while_compact_merges_it_keeps_its_new_value(s3_server, monkeypatch):
    """A retried trial writes its row again (same name, a new value) just after `compact` read the old one:
    compact must not delete the new file, which the merged file lacks. It deletes a file only if its footer
    still holds the write id it read: (size, mtime) cannot tell, for on S3 the mtime is Last-Modified, to the
    second, and a row of other values often has the same size."""
    for _ in range(3):  # the rewrite must land in the second of the first write: almost always at once
        store, stats = compact_while_written_again(s3_server, monkeypatch)
        if stats[0] == stats[1]:
            break
    print(f"\nthe row file's (size, mtime) before and after it was written again: {stats}")
    read = store.read(sweep_id="s").table.set_index("run_id")
    assert read.loc["r", "loss_eval"] == 4.0, listed(store, "s")


@pytest.mark.parametrize("reader", ["read", "stored_names"])
def test_a_row_file_merged_away_between_its_open_and_its_read_is_listed_again(s3_server, monkeypatch, reader):
    """`compact` merges a row file while a reader reads: the reader listed the row file and opened it, and the
    object is gone by the time it reads the footer. On a local disk the open file still reads; on S3 the GET
    answers 404, which the reader must take as "merged meanwhile" (list again), as it does a 404 on the open,
    not as a broken file whose rows are missing."""
    uri = s3_server.bucket()
    writer, reader_store = ResultStore(uri), ResultStore(uri)
    writer.write([minimal_row("a-r0", lineage_id="a")], sweep_id="s", name="a-r0")
    writer.write([minimal_row("b-r0", lineage_id="b")], sweep_id="s", name="b-r0")
    path = f"{writer.results_dir}/sweep_id=s/a-r0.parquet"

    def merge() -> None:
        writer.compact(sweep_id="s")

    monkeypatch.setattr(reader_store, "_fs", MergedWhileOpen(reader_store.filesystem, path, merge))
    if reader == "read":
        read = reader_store.read(sweep_id="s", columns=["status"])
        assert listed(writer, "s")[0].startswith(COMPACTED_PREFIX)  # the merge happened meanwhile
        assert read.corrupt_files == [], read.corrupt_files
        assert sorted(read.table["run_id"]) == ["a-r0", "b-r0"]
    else:
        names = reader_store.stored_names(sweep_id="s")
        assert listed(writer, "s")[0].startswith(COMPACTED_PREFIX)
        assert names == {"a-r0", "b-r0"}


def test_compact_beside_two_writing_sweeps_on_s3_loses_and_doubles_nothing(s3_server):
    """test_compaction's race on S3: two sweeps write while `compact` runs in a loop and a reader reads."""
    store = ResultStore(s3_server.bucket())
    stored = race_writers_and_compact(store, per_sweep=24, lineages=4)
    for sweep_id in stored:
        store.compact(sweep_id=sweep_id)
        read = store.read(sweep_id=sweep_id)
        assert sorted(read.table["run_id"]) == sorted(stored[sweep_id])
        assert read.duplicates_dropped == 0 and read.corrupt_files == []
        [only] = listed(store, sweep_id)
        assert only.startswith(COMPACTED_PREFIX)
        assert footer_sources(store, sweep_id, only) == stored[sweep_id]
