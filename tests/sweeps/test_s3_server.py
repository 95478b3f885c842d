"""The loopback S3 server of the tests (tests/s3_server.py): ResultStore works on it through nothing but an
``s3://`` URI, it reads back what a local store does, and its counter counts exactly the requests made."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pyarrow.fs as pafs
import pytest
from s3_server import s3_operation
from test_store import T0, curve_point, minimal_row

from powersweep.sweeps.store import ResultStore

WRITE_ONE_OBJECT = {"CreateMultipartUpload": 1, "UploadPart": 1, "CompleteMultipartUpload": 1}


def row(run_id: str, **overrides) -> dict:
    """A result row with the required columns (and a fixed created_at, so two stores hold equal rows)."""
    return minimal_row(run_id, created_at=T0, **overrides)


def test_a_store_uri_opens_the_prefix_in_its_bucket_and_opening_sends_nothing(s3_server):
    name = f"opening-{uuid.uuid4().hex[:8]}"
    uri = s3_server.bucket(name)
    assert uri.startswith(f"s3://testing:testing@{name}/store?endpoint_override=127.0.0.1:")
    with pytest.raises(ValueError, match="exists already"):
        s3_server.bucket(name)  # a bucket() is always a new one
    with s3_server.requests() as counted:
        store = ResultStore(uri)
    # The query configures the filesystem and is no part of the root; with an endpoint given, pyarrow does not
    # ask the bucket for its region.
    assert store.results_dir == f"{name}/store/results" and store.local_dir is None
    assert isinstance(store.filesystem, pafs.S3FileSystem) and store.filesystem.region == "us-east-1"
    assert counted.total == 0


def test_rows_json_and_curves_read_back_as_from_a_local_store(s3_server, tmp_path):
    rows = [row("r1", loss_eval=3.25), row("r2", status="diverged", diverged_at_tokens=4096, loss_eval=None)]
    points = [curve_point(1), curve_point(2), curve_point(2, kind="eval", loss_eval=3.5)]
    stores = [ResultStore(s3_server.bucket()), ResultStore(str(tmp_path / "local"))]
    for store in stores:
        store.write(rows, sweep_id="s", name="lin-1")
        store.write_json("sweeps/s/spec.json", {"sweep_id": "s", "grid": {"lr": [0.01, 0.02]}})
        store.write_curve(points, sweep_id="s", name="lin-1")
    remote, local = stores
    assert remote.read().corrupt_files == [] and remote.run_ids() == {"r1", "r2"}
    pd.testing.assert_frame_equal(remote.read().table, local.read().table)
    assert remote.read_json("sweeps/s/spec.json") == {"sweep_id": "s", "grid": {"lr": [0.01, 0.02]}}
    curves = [store.read_curve(sweep_id="s", name="lin-1").to_pandas() for store in stores]
    pd.testing.assert_frame_equal(*curves)
    assert len(curves[0]) == 3
    assert remote.has(sweep_id="s", name="lin-1") and not remote.has(sweep_id="s", name="other")


def test_one_write_is_one_put_of_the_whole_object(s3_server):
    store = ResultStore(s3_server.bucket())
    with s3_server.requests() as counted:
        store.write([row("r1"), row("r2")], sweep_id="s", name="a")
    # An object store is written in place, no temporary file to rename (no CopyObject, no DeleteObject).
    # pyarrow's output stream (from_uri leaves allow_delayed_open off) starts a multipart upload on open,
    # sends the few kilobytes as its one part at close and completes it: the object appears whole, at
    # completion.
    assert counted.by_kind == WRITE_ONE_OBJECT and counted.by_method == {"POST": 2, "PUT": 1}
    assert {r.path for r in counted.requests} == {f"/{store.results_dir}/sweep_id=s/a.parquet"}
    assert all(r.status == 200 for r in counted.requests)
    with s3_server.requests() as counted:
        store.write_json("sweeps/s/spec.json", {"a": 1})
    assert counted.by_kind == WRITE_ONE_OBJECT


def test_reading_sends_no_write(s3_server):
    store = ResultStore(s3_server.bucket())
    store.write([row("r1")], sweep_id="s", name="a")
    store.write_json("sweeps/s/spec.json", {"a": 1})
    store.write_curve([curve_point(1)], sweep_id="s", name="lin-1")
    with s3_server.requests() as counted:
        store.read()
        store.run_ids()
        store.has(sweep_id="s", name="a")
        store.read_json("sweeps/s/spec.json")
        store.read_curve(sweep_id="s", name="lin-1")
        store.read_curves()
    assert set(counted.by_method) == {"GET", "HEAD"}
    # each of the six calls reads a whole file (the results' three times), which takes at least one GET
    assert counted.by_kind["GetObject"] >= 6 and counted.by_kind["ListObjectsV2"] >= 3


def test_the_counter_counts_only_inside_its_block_and_from_every_thread(s3_server):
    with s3_server.requests() as outer:
        uri = s3_server.bucket()  # HEAD (exists?), then pyarrow's create_dir: HEAD again and the PUT
        with s3_server.requests() as inner:
            store = ResultStore(uri)
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda name: store.write([row(name)], sweep_id="s", name=name), "abcd"))
        store.read()
    assert inner.by_kind == {kind: 4 * n for kind, n in WRITE_ONE_OBJECT.items()}
    assert outer.by_kind["HeadBucket"] == 2 and outer.by_kind["CreateBucket"] == 1
    assert set(inner.requests) <= set(outer.requests) and outer.total > inner.total + 3
    store.read()  # after the block: neither counter moves
    assert inner.total == 12


def test_another_process_reaches_the_server_with_the_uri_alone(s3_server):
    uri = s3_server.bucket()
    ResultStore(uri).write([row("a"), row("b")], sweep_id="s", name="a")
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    script = "import sys; from powersweep.sweeps.store import ResultStore; "
    script += "print(*sorted(ResultStore(sys.argv[1]).run_ids()))"
    with s3_server.requests() as counted:
        done = subprocess.run(
            [sys.executable, "-c", script, uri], env=environment, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["a", "b"]
    # The other process's requests count too: one listing of the results, then the one file's size (HEAD) and
    # its bytes (footer and columns: pyarrow decides how many ranged GETs).
    assert counted.by_kind.keys() == {"ListObjectsV2", "HeadObject", "GetObject"}
    assert counted.by_kind["ListObjectsV2"] == 1 and counted.by_kind["HeadObject"] == 1


@pytest.mark.parametrize(
    ("method", "path", "query", "copy", "kind"),
    [
        ("GET", "/", "", False, "ListBuckets"),
        ("PUT", "/b", "", False, "CreateBucket"),
        ("HEAD", "/b", "", False, "HeadBucket"),
        ("GET", "/b", "list-type=2&prefix=store%2F", False, "ListObjectsV2"),
        ("GET", "/b", "prefix=store%2F", False, "ListObjects"),
        ("POST", "/b", "delete", False, "DeleteObjects"),
        ("PUT", "/b/k/x.parquet", "", False, "PutObject"),
        ("PUT", "/b/k", "", True, "CopyObject"),
        ("POST", "/b/k", "uploads", False, "CreateMultipartUpload"),
        ("PUT", "/b/k", "partNumber=1&uploadId=u", False, "UploadPart"),
        ("POST", "/b/k", "uploadId=u", False, "CompleteMultipartUpload"),
        ("DELETE", "/b/k", "uploadId=u", False, "AbortMultipartUpload"),
        ("DELETE", "/b/k", "", False, "DeleteObject"),
        ("GET", "/b/k/", "", False, "GetObject"),
        ("HEAD", "/b/k", "", False, "HeadObject"),
        ("PATCH", "/b/k", "", False, "PATCH object"),
    ],
)
def test_requests_are_named_by_their_s3_operation(method, path, query, copy, kind):
    assert s3_operation(method, path, query, copy=copy) == kind


def test_the_uri_a_write_returns_opens_the_file_written(s3_server):
    store = ResultStore(s3_server.bucket())
    written = store.write([row("r1")], sweep_id="s", name="a")
    filesystem, path = pafs.FileSystem.from_uri(written)
    assert path == f"{store.results_dir}/sweep_id=s/a.parquet" and filesystem.region == "us-east-1"
