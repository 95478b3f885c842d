"""One suite for every storage backend of ResultStore: a local directory and fsspec's memory filesystem."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from concurrent.futures import ThreadPoolExecutor

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from powersweep.proxy_models.filesystems import is_object_store
from powersweep.sweeps import storage as storage_module
from powersweep.sweeps.schema import COLUMN_DOCS, REQUIRED, SCHEMA, STATUSES
from powersweep.sweeps.store import ResultStore, StoreError

T0 = dt.datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=dt.UTC)

STRINGS = (
    "sweep_id",
    "run_id",
    "lineage_id",
    "schedule",
    "model",
    "decay_shape",
    "status",
    "parametrisation",
    "settings_id",
    "data_fingerprint",
    "data_held_out",
    "device",
    "phase",
    "git_sha",
    "versions",
    "execution",
)
INTEGERS = (
    "n_params",
    "n_params_non_embedding",
    "d_model",
    "batch_size",
    "seq_len",
    "tokens",
    "warmup_tokens",
    "seed",
    "diverged_at_tokens",
)
FLOATS = (
    "m_width",
    "lr",
    "lr_max",
    "power_a",
    "power_b",
    "decay_fraction",
    "loss_eval",
    "ppl_eval",
    "loss_train",
    "wall_s",
    "tokens_per_s",
    "mfu",
    "mfu_attention",
)
EXPECTED_DTYPES = {
    **dict.fromkeys(STRINGS, "string"),
    **dict.fromkeys(INTEGERS, "Int64"),
    **dict.fromkeys(FLOATS, "float64"),
    "created_at": "datetime64[us, UTC]",
}


def full_row(run_id: str = "r1", **overrides) -> dict:
    """A row with every column set (except sweep_id, which comes from write())."""
    row = {
        "run_id": run_id,
        "lineage_id": "lin-1",
        "schedule": "power",
        "model": "d256-l4",
        "n_params": 12_345_678,
        "n_params_non_embedding": 9_876_543,
        "d_model": 256,
        "m_width": 2.0,
        "lr": 0.02,
        "lr_max": 0.04,
        "power_a": 4.6,
        "power_b": -0.51,
        "batch_size": 64,
        "seq_len": 1024,
        "tokens": 5_000_000_000,
        "warmup_tokens": 100_000_000,
        "decay_fraction": 0.1,
        "decay_shape": "exp",
        "seed": 7,
        "loss_eval": 3.25,
        "ppl_eval": math.exp(3.25),
        "loss_train": 3.3,
        "status": "ok",
        "diverged_at_tokens": None,
        "wall_s": 812.5,
        "tokens_per_s": 6.15e6,
        "mfu": 0.41,
        "parametrisation": "mup",
        "settings_id": "5e771a6b0d2c4f3e",
        "data_fingerprint": "0c1d2e3f4a5b6c7d",
        "data_held_out": "eval_source '/data/fineweb_val_*.bin'",
        "device": "NVIDIA H100 80GB HBM3",
        "phase": "trunk",
        "git_sha": "0123abcd",
        "versions": '{"torch": "2.13.0"}',
        "execution": '{"micro_batch_size": 16, "pack": 4}',
        "created_at": T0,
    }
    return {**row, **overrides}


def minimal_row(run_id: str = "r1", **overrides) -> dict:
    row = {
        "run_id": run_id,
        "lineage_id": "lin-1",
        "schedule": "wsd",
        "model": "d256-l4",
        "lr": 0.01,
        "batch_size": 32,
        "seq_len": 512,
        "tokens": 1_000_000,
        "seed": 0,
        "status": "ok",
    }
    return {**row, **overrides}


@pytest.fixture(params=["local", "memory"])
def uri(request, tmp_path):
    if request.param == "local":
        yield str(tmp_path / "store")
        return
    root = f"test-{uuid.uuid4().hex}"
    yield f"memory://{root}"
    memory = fsspec.filesystem("memory")
    if memory.exists(f"/{root}"):
        memory.rm(f"/{root}", recursive=True)


@pytest.fixture
def store(uri) -> ResultStore:
    return ResultStore(uri)


def all_files(store: ResultStore) -> list[str]:
    """Every file under the store root, hidden ones included."""
    root = store.results_dir.rsplit("/", 1)[0]
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    return sorted(info.path for info in store.filesystem.get_file_info(selector) if info.is_file)


def partition_dir(store: ResultStore, sweep_id: str) -> str:
    return f"{store.results_dir}/sweep_id={sweep_id}"


def put_raw(store: ResultStore, path: str, data: bytes) -> None:
    store.filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with store.filesystem.open_output_stream(path) as stream:
        stream.write(data)


def test_round_trip_keeps_values_and_dtypes(store):
    rows = [
        full_row("r1"),
        full_row("r2", status="diverged", loss_eval=float("nan"), diverged_at_tokens=123_456),
    ]
    path = store.write(rows, sweep_id="power-s", name="lin-1")
    assert path == f"{store.uri}/results/sweep_id=power-s/lin-1.parquet"
    result = store.read()
    assert result.corrupt_files == [] and result.duplicates_dropped == 0
    assert list(result.table.columns) == SCHEMA.names
    assert {name: str(dtype) for name, dtype in result.table.dtypes.items()} == EXPECTED_DTYPES
    got = result.table.set_index("run_id")
    for name, value in full_row().items():
        actual = got.loc["r1", name] if name != "run_id" else "r1"
        assert pd.isna(actual) if value is None else actual == value, name
    assert got.loc["r1", "sweep_id"] == "power-s"
    assert pd.isna(got.loc["r1", "diverged_at_tokens"]) and got.loc["r2", "diverged_at_tokens"] == 123_456
    assert math.isnan(got.loc["r2", "loss_eval"])


def test_optional_columns_are_null_and_created_at_is_filled(store):
    before = dt.datetime.now(dt.UTC)
    store.write([minimal_row()], sweep_id="s", name="a")
    row = store.read().table.iloc[0]
    optional = set(SCHEMA.names) - REQUIRED
    assert all(pd.isna(row[name]) for name in optional)
    assert before <= row["created_at"] <= dt.datetime.now(dt.UTC)


def test_nan_is_null_and_whole_floats_are_ints(store):
    """Rows as the trainer reports them: token counts as floats, NaN where a value does not apply."""
    nan = float("nan")
    row = full_row(
        schedule="wsd",
        tokens=2e6,
        warmup_tokens=2.0e5,
        lr_max=nan,
        power_a=nan,
        power_b=nan,
        diverged_at_tokens=nan,
        decay_shape=nan,
    )
    store.write([row], sweep_id="s", name="a")
    got = store.read().table.iloc[0]
    assert got["tokens"] == 2_000_000 and got["warmup_tokens"] == 200_000
    assert all(
        pd.isna(got[name]) for name in ("lr_max", "power_a", "power_b", "diverged_at_tokens", "decay_shape")
    )
    with store.filesystem.open_input_file(f"{partition_dir(store, 's')}/a.parquet") as handle:
        stored = pq.read_table(handle)
    assert stored["lr_max"].null_count == 1 and stored["tokens"].type == pa.int64()


def test_dtypes_do_not_depend_on_nulls(store):
    store.write([minimal_row("r1", n_params=10)], sweep_id="s", name="a")
    only_value = store.read().table.dtypes
    store.write([minimal_row("r2")], sweep_id="s", name="b")
    assert store.read().table.dtypes.equals(only_value)


def test_file_holds_sweep_id_only_in_its_path(store):
    store.write([full_row()], sweep_id="s", name="a")
    with store.filesystem.open_input_file(f"{partition_dir(store, 's')}/a.parquet") as handle:
        assert "sweep_id" not in pq.read_table(handle).column_names


def test_pyarrow_dataset_discovery_reads_the_same_rows(store):
    store.write([full_row("r1")], sweep_id="s1", name="a")
    store.write([full_row("r2")], sweep_id="007", name="b")
    put_raw(store, f"{partition_dir(store, 's1')}/.a.parquet.dead.tmp", b"partial")
    partitioning = pads.partitioning(pa.schema([("sweep_id", pa.string())]), flavor="hive")
    dataset = pads.dataset(
        store.results_dir, filesystem=store.filesystem, format="parquet", partitioning=partitioning
    )
    table = dataset.to_table()
    assert sorted(zip(table["sweep_id"].to_pylist(), table["run_id"].to_pylist())) == [
        ("007", "r2"),
        ("s1", "r1"),
    ]
    assert store.read().table["sweep_id"].tolist() == ["007", "s1"]


def test_writing_the_same_name_again_replaces_the_file(store):
    store.write([full_row(loss_eval=4.0)], sweep_id="s", name="a")
    store.write([full_row(loss_eval=3.0)], sweep_id="s", name="a")
    result = store.read()
    assert result.table["loss_eval"].tolist() == [3.0] and result.duplicates_dropped == 0
    assert all_files(store) == [f"{partition_dir(store, 's')}/a.parquet"]


def test_concurrent_writes_of_one_name_leave_one_whole_file(store):
    losses = [3.0 + i / 10 for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda loss: store.write([full_row(loss_eval=loss)], sweep_id="s", name="a"), losses))
    result = store.read()
    assert result.corrupt_files == [] and result.table["loss_eval"].tolist()[0] in losses
    assert all_files(store) == [f"{partition_dir(store, 's')}/a.parquet"]


def crash_halfway(filesystem, path, data):
    with filesystem.open_output_stream(path) as stream:
        stream.write(data[: len(data) // 2])
        raise RuntimeError("killed mid-write")


def test_crash_mid_write_leaves_the_visible_dataset_unchanged(store, monkeypatch):
    store.write([full_row(loss_eval=4.0)], sweep_id="s", name="a")
    before = all_files(store)
    monkeypatch.setattr(storage_module, "_write_bytes", crash_halfway)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.write([full_row(loss_eval=3.0)], sweep_id="s", name="a")
    with pytest.raises(RuntimeError, match="killed mid-write"):
        store.write([full_row("r2")], sweep_id="s", name="b")
    result = store.read()
    assert result.corrupt_files == []
    assert result.table["loss_eval"].tolist() == [4.0]
    assert all_files(store) == before


def test_leftover_temporary_files_are_invisible(store):
    store.write([full_row()], sweep_id="s", name="a")
    put_raw(store, f"{partition_dir(store, 's')}/.b.parquet.0123.tmp", b"PAR1 half a file")
    put_raw(store, f"{partition_dir(store, 's')}/_b.parquet", b"not parquet")
    result = store.read()
    assert result.corrupt_files == [] and result.table["run_id"].tolist() == ["r1"]


def test_corrupt_files_are_reported_and_the_rest_is_read(store):
    good = store.write([full_row("r1")], sweep_id="s", name="a")
    store.write([full_row("r2")], sweep_id="s", name="b")
    with store.filesystem.open_input_file(f"{partition_dir(store, 's')}/b.parquet") as handle:
        intact = handle.read()
    put_raw(store, f"{partition_dir(store, 's')}/b.parquet", intact[: len(intact) // 2])
    put_raw(store, f"{partition_dir(store, 's')}/c.parquet", b"garbage")
    sink = pa.BufferOutputStream()
    pq.write_table(pa.table({"run_id": ["r9"]}), sink)
    put_raw(store, f"{partition_dir(store, 's')}/d.parquet", sink.getvalue().to_pybytes())
    put_raw(store, f"{partition_dir(store, 's')}/notes.txt", b"breaks pyarrow.dataset readers")
    put_raw(store, f"{store.results_dir}/stray.parquet", intact)
    result = store.read()
    assert result.table["run_id"].tolist() == ["r1"]
    reported = {report.split(": ", 1)[0] for report in result.corrupt_files}
    base = good.rsplit("/", 1)[0]
    expected = {f"{base}/{name}" for name in ("b.parquet", "c.parquet", "d.parquet", "notes.txt")}
    assert reported == expected | {f"{store.uri}/results/stray.parquet"}
    assert any("'lineage_id' is missing" in report for report in result.corrupt_files)
    assert store.run_ids() == {"r1"}


def test_files_from_older_or_other_writers_are_conformed(store):
    row = minimal_row(created_at=T0)
    table = pa.table({name: [value] for name, value in row.items()} | {"notes": ["extra column"]})
    table = table.set_column(
        table.schema.get_field_index("model"), "model", table["model"].dictionary_encode()
    )
    table = table.set_column(table.schema.get_field_index("seed"), "seed", table["seed"].cast(pa.int32()))
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    put_raw(store, f"{partition_dir(store, 's')}/old.parquet", sink.getvalue().to_pybytes())
    store.write([full_row("r2")], sweep_id="s", name="new")
    result = store.read()
    assert result.corrupt_files == []
    assert {name: str(dtype) for name, dtype in result.table.dtypes.items()} == EXPECTED_DTYPES
    old = result.table.set_index("run_id").loc["r1"]
    assert (
        old["model"] == "d256-l4"
        and old["seed"] == 0
        and pd.isna(old["loss_eval"])
        and pd.isna(old["device"])
    )
    assert pd.isna(old["phase"])  # files from before the column: null, read as 'final' by analysis


def test_duplicate_run_id_keeps_the_newest_and_counts_the_rest(store):
    newer = T0 + dt.timedelta(hours=1)
    store.write([full_row("r1", loss_eval=3.0, created_at=newer)], sweep_id="s", name="retry-2")
    store.write([full_row("r1", loss_eval=9.0), full_row("r2")], sweep_id="s", name="retry-1")
    store.write(
        [full_row("r1", loss_eval=8.0, created_at=T0 - dt.timedelta(hours=1))], sweep_id="s", name="retry-0"
    )
    result = store.read()
    assert result.duplicates_dropped == 2
    assert result.table["run_id"].tolist() == ["r1", "r2"]
    assert result.table.loc[0, "loss_eval"] == 3.0 and result.table.loc[0, "created_at"] == newer


def test_same_run_id_in_two_sweeps_is_not_a_duplicate(store):
    store.write([full_row("r1")], sweep_id="a", name="x")
    store.write([full_row("r1")], sweep_id="b", name="x")
    result = store.read()
    assert result.duplicates_dropped == 0 and len(result.table) == 2


def test_run_ids_and_read_filter_by_sweep(store):
    store.write([full_row("r1"), full_row("r2")], sweep_id="a", name="x")
    store.write([full_row("r3")], sweep_id="b", name="y")
    assert store.run_ids(sweep_id="a") == {"r1", "r2"}
    assert store.run_ids() == {"r1", "r2", "r3"}
    assert store.run_ids(sweep_id="missing") == set()
    assert store.read(sweep_id="b").table["run_id"].tolist() == ["r3"]


INVALID_ROWS = [
    pytest.param(
        [{k: v for k, v in full_row().items() if k != "lr"}], r"missing required column 'lr'", id="missing"
    ),
    pytest.param(
        [full_row(loss_evl=3.0)], r"unknown column 'loss_evl'.*did you mean 'loss_eval'", id="unknown"
    ),
    pytest.param([full_row(lr="0.1")], r"lr='0\.1' \(str\) in row 0 \(run_id='r1'\)", id="str-for-float"),
    pytest.param([full_row(seed=True)], r"seed=True \(bool\)", id="bool-for-int"),
    pytest.param([full_row(tokens=2**64)], r"tokens=18446744073709551616", id="int-overflow"),
    pytest.param([full_row(batch_size=32.5)], r"batch_size=32\.5 \(float\).*whole number", id="fraction"),
    pytest.param([full_row(tokens=float("inf"))], r"tokens=inf \(float\)", id="inf-for-int"),
    pytest.param(
        [full_row(lr=float("nan"))], r"missing required column 'lr' in row 0 .*\(value nan\)", id="nan-lr"
    ),
    pytest.param([full_row(status="crashed")], r"status='crashed'.*'ok', 'diverged', 'failed'", id="status"),
    pytest.param([full_row(run_id=None)], r"missing required column 'run_id'", id="null-required"),
    pytest.param(
        [full_row(created_at=dt.datetime(2025, 1, 1))], r"created_at=datetime.*timezone-aware", id="naive"
    ),
    pytest.param(
        [full_row("r1"), full_row("r2"), full_row("r1")], r"run_id='r1' in rows 0 and 2", id="repeated"
    ),
    pytest.param([full_row(sweep_id="other")], r"rows have sweep_id='other'", id="other-sweep"),
    pytest.param([full_row(), "not a row"], r"row 1='not a row'", id="not-a-dict"),
    pytest.param(full_row(), r"rows=.*non-empty list", id="dict-not-list"),
    pytest.param([], r"rows=\[\]: must be a non-empty list", id="empty"),
]


@pytest.mark.parametrize(("rows", "message"), INVALID_ROWS)
def test_invalid_rows_name_the_column_and_write_nothing(store, rows, message):
    with pytest.raises(StoreError, match=message):
        store.write(rows, sweep_id="s", name="a")
    assert all_files(store) == []
    assert store.read().table.empty


@pytest.mark.parametrize("value", ["", "a/b", "../up", ".hidden", "_hidden", "x=y", "run.parquet", None])
@pytest.mark.parametrize("field", ["sweep_id", "name"])
def test_ids_that_are_not_safe_path_segments_are_rejected(store, field, value):
    arguments = {"sweep_id": "s", "name": "a", field: value}
    with pytest.raises(StoreError, match=f"{field}={value!r}: must be"):
        store.write([full_row()], **arguments)
    assert all_files(store) == []


def test_json_metadata_round_trip(store):
    spec = {"sweep_id": "s", "grid": {"lr": [0.01, 0.02]}, "note": "x" * 3}
    path = store.write_json("sweeps/s/spec.json", spec)
    assert path == f"{store.uri}/sweeps/s/spec.json"
    assert store.read_json("sweeps/s/spec.json") == spec
    store.write_json("sweeps/s/spec.json", {"replaced": True})
    assert store.read_json("sweeps/s/spec.json") == {"replaced": True}
    assert store.read().table.empty  # metadata is never mistaken for results


@pytest.mark.parametrize(
    ("relpath", "obj", "message"),
    [
        ("results/sweep_id=s/spec.json", {}, "holds only result Parquet files"),
        ("../spec.json", {}, "must be a relative path"),
        ("/abs/spec.json", {}, "must be a relative path"),
        ("sweeps/.spec.json", {}, "must be a relative path"),
        ("spec.json", {"when": T0}, "not JSON serializable"),
        ("spec.json", {"lr": float("nan")}, "finite numbers"),
    ],
)
def test_json_metadata_errors(store, relpath, obj, message):
    with pytest.raises(StoreError, match=message):
        store.write_json(relpath, obj)
    assert all_files(store) == []


def test_read_json_of_a_missing_or_broken_file_says_so(store):
    with pytest.raises(StoreError, match="no such file.*write it first with write_json"):
        store.read_json("sweeps/s/spec.json")
    put_raw(store, f"{store.results_dir.rsplit('/', 1)[0]}/broken.json", b"{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.read_json("broken.json")


def test_empty_store_reads_as_an_empty_table_with_the_schema(store):
    result = store.read()
    assert result.table.empty and result.corrupt_files == [] and result.duplicates_dropped == 0
    assert {name: str(dtype) for name, dtype in result.table.dtypes.items()} == EXPECTED_DTYPES
    assert store.run_ids() == set() and store.read(sweep_id="s").table.empty


def test_every_column_is_documented_and_statuses_are_fixed():
    assert list(COLUMN_DOCS) == SCHEMA.names
    units_and_meanings = [doc.partition(" / ")[::2] for doc in COLUMN_DOCS.values()]
    assert all(unit.strip() and meaning.strip() for unit, meaning in units_and_meanings)
    assert STATUSES == ("ok", "diverged", "failed")
    assert set(EXPECTED_DTYPES) == set(SCHEMA.names)


@pytest.mark.parametrize("uri", ["nosuchscheme://bucket/x", "", "   "])
def test_unusable_storage_uri_is_a_store_error(uri):
    with pytest.raises(StoreError, match="storage URI"):
        ResultStore(uri)


def test_file_uri_and_plain_path_are_the_same_store(tmp_path):
    ResultStore(str(tmp_path)).write([full_row()], sweep_id="s", name="a")
    assert ResultStore(f"file://{tmp_path}").run_ids() == {"r1"}


def test_object_stores_are_written_in_one_put():
    memory = fsspec.filesystem("memory")
    assert is_object_store(pafs.PyFileSystem(pafs.FSSpecHandler(memory))) is False
    assert is_object_store(pafs.LocalFileSystem()) is False
    assert is_object_store(pafs.S3FileSystem(anonymous=True, region="us-east-1")) is True


def test_a_phase_outside_final_and_trunk_is_refused(tmp_path):
    with pytest.raises(StoreError, match="phase='middle' in row 0 .*'final', 'trunk'"):
        ResultStore(str(tmp_path)).write([full_row(phase="middle")], sweep_id="s", name="n")


def curve_point(
    step: int,
    *,
    segment: str = "trunk",
    budget: float | None = None,
    kind: str = "train",
    loss: float = 3.0,
    **extra,
) -> dict:
    return {
        "lineage_id": "lin-1",
        "run_id": None if segment == "trunk" else "r1",
        "segment": segment,
        "budget": budget,
        "fork_tokens": None if budget is None else 1024.0,
        "kind": kind,
        "step": step,
        "tokens": step * 128,
        "lr": 1e-3,
        "loss_train": loss,
        "loss_train_mean": loss,
        "loss_eval": math.nan,
        **extra,
    }


def test_curve_round_trip_keeps_every_point_and_its_sweep(store):
    points = [curve_point(s) for s in (1, 2, 3)] + [curve_point(3, kind="eval", loss_eval=3.5)]
    points += [curve_point(s, segment="decay", budget=2048.0) for s in (4, 5)]
    store.write_curve(points, sweep_id="s1", name="lin-1")
    table = store.read_curves(sweep_id="s1").table
    assert len(table) == len(points) and set(table["sweep_id"]) == {"s1"}
    assert list(zip(table["segment"], table["kind"], table["step"])) == [
        ("trunk", "train", 1),
        ("trunk", "train", 2),
        ("trunk", "train", 3),
        ("trunk", "eval", 3),
        ("decay", "train", 4),
        ("decay", "train", 5),
    ]
    assert table["budget"].isna().sum() == 4 and table.loc[3, "loss_eval"] == 3.5
    assert store.curve_names(sweep_id="s1") == {"lin-1"} and store.read_curves(sweep_id="other").table.empty
    assert store.read(sweep_id="s1").table.empty  # curves are not results


def test_writing_a_curve_again_merges_by_key_and_the_newest_point_wins(store):
    store.write_curve([curve_point(s, loss=4.0) for s in (1, 2, 3)], sweep_id="s1", name="lin-1")
    store.write_curve(
        [curve_point(s, loss=3.0) for s in (3, 4)] + [curve_point(4, segment="decay", budget=512.0)],
        sweep_id="s1",
        name="lin-1",
    )  # a resumed lineage hands point 3 on again
    table = store.read_curves(sweep_id="s1").table
    trunk = table[table["segment"].eq("trunk")]
    assert list(trunk["step"]) == [1, 2, 3, 4] and list(trunk["loss_train"]) == [4.0, 4.0, 3.0, 3.0]
    assert len(table) == 5 and not table.duplicated(["segment", "budget", "kind", "step"]).any()


def test_an_unreadable_curve_file_is_reported_and_replaced_on_write(store):
    store.write_curve([curve_point(1)], sweep_id="s1", name="lin-2")
    put_raw(store, f"{store._root}/curves/sweep_id=s1/lin-1.parquet", b"not parquet")
    read = store.read_curves(sweep_id="s1")
    assert len(read.table) == 1 and len(read.corrupt_files) == 1 and "lin-1.parquet" in read.corrupt_files[0]
    store.write_curve([curve_point(1), curve_point(2)], sweep_id="s1", name="lin-1")
    assert len(store.read_curves(sweep_id="s1").table) == 3


def test_an_empty_store_has_no_curves_but_their_columns(store):
    table = store.read_curves().table
    assert table.empty and {"sweep_id", "lineage_id", "segment", "step", "loss_train_mean"} <= set(
        table.columns
    )
