"""The results store: a crash-safe, hive-partitioned Parquet dataset under one storage URI.

The store, not Ray's experiment state, is the source of truth for which runs are done.
Layout under the root of the URI::

    results/sweep_id=<sweep_id>/<name>.parquet   # one file per write(), columns of SCHEMA minus sweep_id
    curves/sweep_id=<sweep_id>/<lineage_id>.parquet   # a lineage's training curve (sweeps/curve_store.py)
    set-aside/sweep_id=<sweep_id>/<name>.<UTC time>.parquet   # unreadable files moved out of results/, kept
    set-aside/sweep_id=<sweep_id>/<name>.curve.<UTC time>.parquet   # unreadable curve files, kept
    set-aside/sweep_id=<sweep_id>/replaced-<UTC time>/   # a sweep's results, curves and spec before --replace
    <any other relpath>.json                     # small metadata files, e.g. sweeps/<sweep_id>/spec.json

Every file appears whole or not at all. Object stores (s3, gcs, azure) replace an object
in one PUT, so they are written directly; every other filesystem gets a hidden temporary
file in the same directory (leading '.', skipped by every reader) that is then renamed.

Example::

    store = ResultStore("runs/store")           # or file://..., s3://bucket/prefix, memory://...
    store.write(rows, sweep_id="wsd-small", name=lineage_id)
    done = store.run_ids(sweep_id="wsd-small")   # resume: run only what is missing
    result = store.read(sweep_id="wsd-small")    # .table, .corrupt_files, .duplicates_dropped
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import json
import logging
import os
import posixpath
import re
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from powersweep.sweeps.curve_store import CURVE_SCHEMA, CURVES_DIR, conform_curve, merge_points
from powersweep.sweeps.schema import (
    COLUMN_DOCS,
    REQUIRED,
    SCHEMA,
    STATUSES,
    StoreError,
    empty_frame,
    rows_to_table,
    table_to_frame,
)

__all__ = ["COLUMN_DOCS", "SCHEMA", "STATUSES", "ReadResult", "ResultStore", "StoreError"]

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"
SET_ASIDE_DIR = "set-aside"  # unreadable result files moved out of the way: kept for a person, never read
REPLACED_PREFIX = "replaced-"  # set-aside/sweep_id=<id>/replaced-<time>/: a sweep's files before --replace
PARTITION = "sweep_id"
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
_HIDDEN_PREFIXES = (".", "_")  # the prefixes pyarrow.dataset discovery skips by default
# Filesystems whose single-object writes are atomic and whose renames are copies.
_OBJECT_STORES = frozenset({"s3", "s3a", "gs", "gcs", "abfs", "abfss", "az", "adl", "oss"})
# pyarrow's native filesystems; others go through fsspec.
_PYARROW_SCHEMES = frozenset({"file", "s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss"})
# The columns stored in each file: the partition column lives in the directory name.
_FILE_SCHEMA = pa.schema([field for field in SCHEMA if field.name != PARTITION])
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """What ``ResultStore.read`` found."""

    table: pd.DataFrame  # one row per (sweep_id, run_id), columns of SCHEMA, sorted by sweep_id, run_id
    corrupt_files: list[str]  # "<path>: <reason>" for each file that could not be read; its rows are absent
    duplicates_dropped: int  # rows dropped because a newer row had the same (sweep_id, run_id)


class ResultStore:
    """Result rows of every sweep, stored as Parquet under ``uri``.

    ``uri`` is a local path, ``file://``, a pyarrow filesystem URI (``s3://bucket/prefix``,
    ``gs://``, ``abfs://``, ``hdfs://``) or any fsspec URI whose package is installed (``memory://``,
    ``az://``).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self._fs, self._root = _resolve_filesystem(uri)
        self._write_whole_objects = _is_object_store(self._fs)

    def __repr__(self) -> str:
        return f"ResultStore({self.uri!r})"

    @property
    def filesystem(self) -> pafs.FileSystem:
        """The pyarrow filesystem holding the store, for other readers such as ``pyarrow.dataset``."""
        return self._fs

    @property
    def local_dir(self) -> str | None:
        """The store's directory on this machine's filesystem;
        None for an object store or other remote one."""
        return self._root if isinstance(self._fs, pafs.LocalFileSystem) else None

    @property
    def results_dir(self) -> str:
        """Path of the hive-partitioned dataset on ``filesystem``."""
        return self._path(RESULTS_DIR)

    def write(self, rows: Sequence[Mapping[str, Any]], *, sweep_id: str, name: str) -> str:
        """Validate ``rows`` and store them as ``results/sweep_id=<sweep_id>/<name>.parquet``.

        Columns left out of a row are null; ``created_at`` defaults to now (UTC). Invalid rows
        raise ``StoreError`` and write nothing. Writing the same ``name`` again replaces the file
        atomically, so a retried trial may simply write again. Returns the file's URI.
        """
        _check_segment("sweep_id", sweep_id)
        _check_segment("name", name)
        try:
            table = rows_to_table(rows, defaults={PARTITION: sweep_id, "created_at": _now()})
        except StoreError as error:
            raise StoreError(f"write(sweep_id={sweep_id!r}, name={name!r}): {error}") from None
        _check_partition(table, sweep_id, name)
        relpath = f"{RESULTS_DIR}/{PARTITION}={sweep_id}/{name}.parquet"
        self._put(self._path(relpath), _parquet_bytes(table.drop_columns([PARTITION])))
        return self._uri(relpath)

    def has(self, *, sweep_id: str, name: str) -> bool:
        """Whether ``write(..., sweep_id=sweep_id, name=name)`` has completed and its file reads as rows (a
        truncated, overwritten or foreign file does not count)."""
        _check_segment("sweep_id", sweep_id)
        _check_segment("name", name)
        path = self._path(f"{RESULTS_DIR}/{PARTITION}={sweep_id}/{name}.parquet")
        if self._fs.get_file_info(path).type != pafs.FileType.File:
            return False
        return isinstance(self._load_file(path), pa.Table)

    def read(self, *, sweep_id: str | None = None) -> ReadResult:
        """Read every result (or one sweep's), skipping and reporting files that cannot be read.

        Rows sharing a (sweep_id, run_id) are collapsed to the one with the newest ``created_at``.
        A store that does not exist yet reads as an empty table with every column of ``SCHEMA``.
        """
        paths = self._result_files(sweep_id)
        loaded = _map_threads(self._load_file, paths)
        tables = [table for table in loaded if isinstance(table, pa.Table)]
        corrupt = [f"{self._uri_of(path)}: {why}" for path, why in zip(paths, loaded) if isinstance(why, str)]
        frame = table_to_frame(pa.concat_tables(tables)) if tables else empty_frame()
        frame, dropped = _drop_duplicates(frame)
        return ReadResult(table=frame, corrupt_files=corrupt, duplicates_dropped=dropped)

    def run_ids(self, *, sweep_id: str | None = None) -> set[str]:
        """The run_ids already stored: the sweep driver runs only the others.

        Rows of corrupt files are missing here (so those runs are run again) and are logged.
        """
        result = self.read(sweep_id=sweep_id)
        for report in result.corrupt_files:
            logger.warning("results store %s: skipped unreadable file %s", self.uri, report)
        return set(result.table["run_id"])

    def set_aside(self, *, sweep_id: str, names: Collection[str]) -> list[str]:
        """Move each file ``<name>.parquet`` of ``names`` in the sweep's partition that cannot be read as rows
        (truncated, overwritten, another schema) to ``set-aside/``, where it is kept and never read, so its
        run is stored again. Returns ``"<old URI> -> <new URI> (<reason>)"`` for each file moved."""
        _check_segment("sweep_id", sweep_id)
        moved = []
        for path in self._result_files(sweep_id):
            name = posixpath.basename(path).removesuffix(".parquet")
            reason = self._load_file(path) if name in names else None
            if isinstance(reason, str):
                moved.append(self._move_aside(path, sweep_id, "result", reason))
        return moved

    def _move_aside(self, path: str, sweep_id: str, kind: str, reason: str) -> str:
        """Move an unreadable ``kind`` file ('result' or 'curve') to the sweep's set-aside folder, where
        ``set_aside_files`` lists it; returns "<old URI> -> <new URI> (<reason>)"."""
        name = posixpath.basename(path).removesuffix(".parquet")
        stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
        suffix = ".curve" if kind == "curve" else ""
        relpath = f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{name}{suffix}.{stamp}.parquet"
        self._guarded(
            f"move an unreadable {kind} file aside", relpath, lambda: self._move(path, self._path(relpath))
        )
        return f"{self._uri(posixpath.relpath(path, self._root))} -> {self._uri(relpath)} ({reason})"

    def set_aside_curves(self, *, sweep_id: str) -> list[str]:
        """Move each of the sweep's curve files that cannot be read to ``set-aside/`` (kept, never read), as
        ``set_aside`` does for results: a lineage trained again writes a new curve, never into a broken one.
        Returns ``"<old URI> -> <new URI> (<reason>)"`` for each file moved."""
        moved = []
        for path in self._curve_files(sweep_id):
            reason = self._load_curve(path)
            if isinstance(reason, str):
                moved.append(self._move_aside(path, sweep_id, "curve", reason))
        return moved

    def unreadable_curves(self, *, sweep_id: str) -> list[str]:
        """ "<URI>: <reason>" for each of the sweep's curve files that cannot be read."""
        paths = self._curve_files(sweep_id)
        loaded = _map_threads(self._load_curve, paths)
        return [
            f"{self._uri(posixpath.relpath(p, self._root))}: {why}"
            for p, why in zip(paths, loaded)
            if isinstance(why, str)
        ]

    def replace_sweep(self, *, sweep_id: str) -> str | None:
        """Move every result and curve file of the sweep, and its stored spec, to
        ``set-aside/sweep_id=<id>/replaced-<UTC time>/`` (kept, never read), so that the sweep starts empty.
        Returns that folder's URI, or None when the sweep had nothing stored."""
        _check_segment("sweep_id", sweep_id)
        stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
        folder = f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{REPLACED_PREFIX}{stamp}"
        spec = self._path(f"sweeps/{sweep_id}/spec.json")
        moves = [(p, f"{folder}/{RESULTS_DIR}/{posixpath.basename(p)}") for p in self._result_files(sweep_id)]
        moves += [(p, f"{folder}/{CURVES_DIR}/{posixpath.basename(p)}") for p in self._curve_files(sweep_id)]
        if self._fs.get_file_info(spec).is_file:
            moves.append((spec, f"{folder}/spec.json"))
        for source, relpath in moves:
            self._guarded(
                "move a replaced sweep's file aside",
                relpath,
                lambda source=source, relpath=relpath: self._move(source, self._path(relpath)),
            )
        return self._uri(folder) if moves else None

    def replaced(self, *, sweep_id: str) -> list[str]:
        """ "<URI> (<n> rows, <m> curves)" for each earlier version of the sweep that ``replace_sweep`` set
        aside, oldest first."""
        _check_segment("sweep_id", sweep_id)
        base = self._path(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}")
        infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        found = []
        for name in sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(REPLACED_PREFIX)
        ):
            counts = [
                len(self._fs.get_file_info(pafs.FileSelector(f"{base}/{name}/{kind}", allow_not_found=True)))
                for kind in (RESULTS_DIR, CURVES_DIR)
            ]
            found.append(
                f"{self._uri(f'{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{name}')} ({counts[0]} rows, "
                f"{counts[1]} curves)"
            )
        return found

    def set_aside_files(self, *, sweep_id: str) -> list[str]:
        """URIs of the files ``set_aside`` moved out of the sweep's partition, oldest first."""
        _check_segment("sweep_id", sweep_id)
        base = self._path(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}")
        infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        names = sorted((info.mtime_ns or 0, info.base_name) for info in infos if info.is_file)
        return [self._uri(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{name}") for _, name in names]

    def write_json(self, relpath: str, obj: Any) -> str:
        """Store ``obj`` as JSON at ``relpath`` under the root, atomically. Returns the file's URI.

        Example: ``store.write_json("sweeps/wsd-small/spec.json", spec.model_dump(mode="json"))``.
        """
        _check_relpath(relpath)
        try:
            text = json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
        except (TypeError, ValueError) as error:
            raise StoreError(
                f"write_json({relpath!r}): {error}; pass dicts, lists, str, finite numbers, bool or None "
                "(e.g. a pydantic model's model_dump(mode='json'))"
            ) from None
        self._put(self._path(relpath), text.encode())
        return self._uri(relpath)

    def read_json(self, relpath: str) -> Any:
        """Load the JSON file at ``relpath`` under the root, as written by ``write_json``."""
        _check_relpath(relpath)
        try:
            with self._fs.open_input_stream(self._path(relpath), compression=None) as stream:
                data = stream.read()
        except FileNotFoundError:
            where = f"read_json({relpath!r}) in storage URI {self.uri!r}"
            raise StoreError(f"{where}: no such file: write it first with write_json") from None
        try:
            return json.loads(data)
        except ValueError as error:
            where = f"read_json({relpath!r}) in storage URI {self.uri!r}"
            raise StoreError(f"{where}: not valid JSON ({error}): rewrite it with write_json") from None

    def delete(self, relpath: str) -> None:
        """Remove the metadata file at ``relpath`` under the root, if there is one
        (results are never deleted)."""
        _check_relpath(relpath)
        _delete_quietly(self._fs, self._path(relpath))

    def write_curve(self, rows: Sequence[Mapping[str, Any]], *, sweep_id: str, name: str) -> str:
        """Merge curve points (rows of ``sweeps.curve_store.CURVE_SCHEMA``) into
        ``curves/sweep_id=<sweep_id>/<name>.parquet`` by key, replacing the file atomically; an unreadable
        file there is replaced. Returns the file's URI."""
        _check_segment("sweep_id", sweep_id)
        _check_segment("name", name)
        relpath = f"{CURVES_DIR}/{PARTITION}={sweep_id}/{name}.parquet"
        old = self._load_curve(self._path(relpath))
        if isinstance(old, str):  # broken since the sweep started: kept aside, never silently overwritten
            moved = self._move_aside(self._path(relpath), sweep_id, "curve", old)
            logger.warning("results store %s: %s", self.uri, moved)
        self._put(
            self._path(relpath),
            _parquet_bytes(merge_points(old if isinstance(old, pa.Table) else None, rows)),
        )
        return self._uri(relpath)

    def read_curves(self, *, sweep_id: str | None = None) -> ReadResult:
        """Every stored curve point (or one sweep's), with a sweep_id column; unreadable files are skipped and
        named in ``corrupt_files``. Empty (with the columns) when there are none."""
        paths = self._curve_files(sweep_id)
        loaded = _map_threads(self._load_curve, paths)
        tables = [
            t.add_column(0, PARTITION, pa.array([_curve_sweep(p)] * len(t), pa.string()))
            for p, t in zip(paths, loaded)
            if isinstance(t, pa.Table)
        ]
        corrupt = [
            f"{self._uri(posixpath.relpath(p, self._root))}: {why}"
            for p, why in zip(paths, loaded)
            if isinstance(why, str)
        ]
        schema = pa.schema([pa.field(PARTITION, pa.string()), *CURVE_SCHEMA])
        frame = (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()
        return ReadResult(table=frame, corrupt_files=corrupt, duplicates_dropped=0)

    def curve_names(self, *, sweep_id: str) -> set[str]:
        """Names (lineage ids) of the sweep's stored curve files."""
        return {posixpath.basename(p).removesuffix(".parquet") for p in self._curve_files(sweep_id)}

    def read_curve(self, *, sweep_id: str, name: str) -> pa.Table | None:
        """One stored curve (the lineage ``name``'s), conformed to CURVE_SCHEMA; None if there is none or it
        cannot be read (``write_curve`` replaces such a file)."""
        _check_segment("sweep_id", sweep_id)
        _check_segment("name", name)
        table = self._load_curve(self._path(f"{CURVES_DIR}/{PARTITION}={sweep_id}/{name}.parquet"))
        return table if isinstance(table, pa.Table) else None

    def _curve_files(self, sweep_id: str | None) -> list[str]:
        base = self._path(CURVES_DIR)
        if sweep_id is not None:
            _check_segment("sweep_id", sweep_id)
            base = f"{base}/{PARTITION}={sweep_id}"
        infos = self._fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(
            i.path
            for i in infos
            if i.is_file and i.path.endswith(".parquet") and not _is_hidden(i.path, base)
        )

    def _load_curve(self, path: str) -> pa.Table | str | None:
        """A curve file conformed to CURVE_SCHEMA, the reason it cannot be read, or None if there is none."""
        try:
            with self._fs.open_input_file(path) as handle:
                return conform_curve(pq.ParquetFile(handle).read(use_threads=False))
        except FileNotFoundError:
            return None
        except (pa.ArrowException, OSError, ValueError) as error:
            return f"{type(error).__name__}: {error}"

    def _guarded(self, what: str, relpath: str, action: Callable[[], T]) -> T:
        """Run a write; a store that refuses it (read-only, permissions, full) is one line naming it."""
        try:
            return action()
        except OSError as error:
            raise StoreError(
                f"storage URI {self.uri!r}: cannot {what} ({relpath}): {write_failure(error)}"
            ) from None

    def _move(self, source: str, destination: str) -> None:
        self._fs.create_dir(posixpath.dirname(destination), recursive=True)
        self._fs.move(source, destination)

    def _put(self, path: str, data: bytes) -> None:
        """Make ``path`` hold ``data``, with no moment where a reader sees part of it."""
        relpath = posixpath.relpath(path, self._root)
        self._guarded("write", relpath, lambda: self._put_unguarded(path, data))

    def _put_unguarded(self, path: str, data: bytes) -> None:
        if self._write_whole_objects:
            _write_bytes(self._fs, path, data)  # a single PUT: the object appears complete or not at all
            return
        directory, basename = posixpath.split(path)
        self._fs.create_dir(directory, recursive=True)
        temporary = f"{directory}/.{basename}.{uuid.uuid4().hex}.tmp"
        try:
            _write_bytes(self._fs, temporary, data)
            self._fs.move(temporary, path)
        except BaseException:
            _delete_quietly(self._fs, temporary)
            raise

    def _result_files(self, sweep_id: str | None) -> list[str]:
        """Paths of the visible Parquet files, sorted, so reads are deterministic."""
        base = self.results_dir
        if sweep_id is not None:
            _check_segment("sweep_id", sweep_id)
            base = f"{base}/{PARTITION}={sweep_id}"
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        infos = self._fs.get_file_info(selector)
        return sorted(info.path for info in infos if info.is_file and not _is_hidden(info.path, base))

    def _load_file(self, path: str) -> pa.Table | str:
        """The file's rows conformed to SCHEMA, or the reason it cannot be read."""
        sweep_id = _partition_value(posixpath.relpath(path, self.results_dir))
        if sweep_id is None:
            return f"not a {PARTITION}=<id>/<name>.parquet file of {RESULTS_DIR}/: move or delete it"
        try:
            with self._fs.open_input_file(path) as handle:
                table = pq.ParquetFile(handle).read(use_threads=False)  # parallel across files instead
            return _conform(table, sweep_id)
        except (pa.ArrowException, OSError, ValueError) as error:
            return f"{type(error).__name__}: {error}"

    def _path(self, relpath: str) -> str:
        return posixpath.join(self._root, relpath)

    def _uri(self, relpath: str) -> str:
        return (self.uri if self.uri.endswith("/") else self.uri + "/") + relpath

    def _uri_of(self, path: str) -> str:
        return self._uri(f"{RESULTS_DIR}/{posixpath.relpath(path, self.results_dir)}")


def _resolve_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The filesystem and root path of ``uri``; pyarrow's own filesystems first, then fsspec."""
    if not isinstance(uri, str) or not uri.strip():
        raise StoreError(f"storage URI {uri!r}: must be a local path or a URI such as s3://bucket/prefix")
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri)).replace(os.sep, "/")
    scheme = uri.split("://", 1)[0].lower()
    if scheme in _PYARROW_SCHEMES:
        try:
            filesystem, path = pafs.FileSystem.from_uri(uri)
            return filesystem, path.rstrip("/") or "/"
        except (ImportError, pa.ArrowNotImplementedError):
            pass  # this pyarrow build lacks the filesystem: fsspec may have it
        except (OSError, ValueError) as error:
            fix = "check the bucket, endpoint and credentials"
            raise StoreError(f"storage URI {uri!r}: cannot open it ({error}): {fix}") from None
    return _fsspec_filesystem(uri, scheme)


def _fsspec_filesystem(uri: str, scheme: str) -> tuple[pafs.FileSystem, str]:
    try:
        filesystem, path = fsspec.core.url_to_fs(uri)
    except ImportError as error:
        raise StoreError(f"storage URI {uri!r}: scheme {scheme!r} needs a package: {error}") from None
    except ValueError as error:
        fix = "use a local path, file://, s3://, gs:// or an installed fsspec protocol"
        raise StoreError(f"storage URI {uri!r}: unknown scheme {scheme!r} ({error}): {fix}") from None
    return pafs.PyFileSystem(pafs.FSSpecHandler(filesystem)), path.rstrip("/") or "/"


def _is_object_store(filesystem: pafs.FileSystem) -> bool:
    if isinstance(filesystem, pafs.PyFileSystem):
        protocol = filesystem.handler.fs.protocol
        protocols = {protocol} if isinstance(protocol, str) else set(protocol)
    else:
        protocols = {filesystem.type_name}
    return bool(protocols & _OBJECT_STORES)


def _write_bytes(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path, compression=None) as stream:
        stream.write(data)


def _delete_quietly(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except OSError:
        pass  # never created, or already gone; readers skip hidden files anyway


def _parquet_bytes(table: pa.Table) -> bytes:
    """Encode in memory first, so a failure while encoding never reaches the filesystem."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def _conform(table: pa.Table, sweep_id: str) -> pa.Table:
    """One file's rows with SCHEMA's columns, sweep_id taken from the file's directory."""
    if not table.schema.equals(_FILE_SCHEMA):
        table = _cast_to_file_schema(table)
    partition = pa.array([sweep_id] * len(table), pa.string())
    return table.add_column(0, SCHEMA.field(PARTITION), partition)


def _cast_to_file_schema(table: pa.Table) -> pa.Table:
    """Fit a file written by other code or an older SCHEMA; ValueError if it cannot fit.

    Optional columns it lacks become null, extra columns are ignored and dictionary-encoded
    columns are decoded, so readers never see categorical surprises.
    """
    columns = []
    for field in _FILE_SCHEMA:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        elif field.name in REQUIRED:
            raise ValueError(f"required column {field.name!r} is missing")
        else:
            columns.append(pa.nulls(len(table), field.type))
    for field, column in zip(_FILE_SCHEMA, columns):
        if not field.nullable and column.null_count:
            raise ValueError(f"required column {field.name!r} has {column.null_count} null values")
    return pa.Table.from_arrays(columns, schema=_FILE_SCHEMA)


def _drop_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the newest row per (sweep_id, run_id); on equal created_at, the file sorting last wins."""
    newest_last = frame.sort_values("created_at", kind="stable")
    kept = newest_last.drop_duplicates([PARTITION, "run_id"], keep="last")
    kept = kept.sort_values([PARTITION, "run_id"], kind="stable").reset_index(drop=True)
    return kept, len(frame) - len(kept)


# errno -> what a person can do about a write the filesystem refused
_WRITE_FIXES = {
    errno.ENOSPC: "free space there or give another --storage",
    errno.EDQUOT: "raise the disk quota or free space under it, or give another --storage",
    errno.EROFS: "the filesystem is read-only: give a writable --storage",
}


def write_failure(error: OSError) -> str:
    """'<reason>: <fix>' for a write the filesystem refused: a full disk is not a permission problem."""
    reason = os.strerror(error.errno) if error.errno else error.strerror or str(error).splitlines()[0]
    fix = _WRITE_FIXES.get(error.errno, "make the store writable for this user, or give another --storage")
    return f"{type(error).__name__} [errno {error.errno}] {reason}: {fix}"


def _map_threads(function: Callable[[str], T], items: list[str]) -> list[T]:
    if len(items) < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor() as pool:  # pyarrow decodes without the GIL, and remote reads wait on I/O
        return list(pool.map(function, items))


def _check_partition(table: pa.Table, sweep_id: str, name: str) -> None:
    other = set(table.column(PARTITION).to_pylist()) - {sweep_id}
    if other:
        raise StoreError(
            f"write(sweep_id={sweep_id!r}, name={name!r}): rows have sweep_id={sorted(other)[0]!r}: "
            "leave sweep_id out of the rows or make it match the argument"
        )


def _check_segment(field: str, value: Any) -> None:
    if not isinstance(value, str) or not _SEGMENT.fullmatch(value) or value.endswith(".parquet"):
        raise StoreError(
            f"{field}={value!r}: must be 1-200 letters, digits, '.', '_' or '-', start with a letter or "
            "digit and not end in '.parquet' (it names a directory or file in the store)"
        )


def _check_relpath(relpath: Any) -> None:
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    example = "e.g. 'sweeps/<sweep_id>/spec.json'"
    if any(part in ("", ".", "..") or part.startswith(_HIDDEN_PREFIXES) for part in parts):
        raise StoreError(
            f"relpath={relpath!r}: must be a relative path without '.', '..' or hidden parts, {example}"
        )
    if parts[0] == RESULTS_DIR:
        raise StoreError(
            f"relpath={relpath!r}: {RESULTS_DIR}/ holds only result Parquet files; use {example}"
        )


def _is_hidden(path: str, base: str) -> bool:
    """Temporary files and the like: skipped here as by pyarrow.dataset discovery."""
    return any(part.startswith(_HIDDEN_PREFIXES) for part in posixpath.relpath(path, base).split("/"))


def _partition_value(relpath: str) -> str | None:
    """``sweep_id=<id>/<name>.parquet`` -> ``<id>``; None for any other file."""
    parts = relpath.split("/")
    key, _, value = parts[0].partition("=")
    is_result = len(parts) == 2 and parts[1].endswith(".parquet") and key == PARTITION
    return value if is_result and _SEGMENT.fullmatch(value) else None


def _curve_sweep(path: str) -> str:
    """``.../curves/sweep_id=<id>/<name>.parquet`` -> ``<id>``."""
    return posixpath.basename(posixpath.dirname(path)).partition("=")[2]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
