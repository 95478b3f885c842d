"""The results store: a crash-safe, hive-partitioned Parquet dataset under one storage URI.

The store, not Ray's experiment state, is the source of truth for which runs are done. Its layout is
`powersweep.store_layout`'s: a trial keeps each lineage's rows in one file, rewritten with each row the
moment it is final (`LineageRows`), and its curve likewise (`LineageCurve`); `compact` merges a sweep's files
into one (a running lineage's once it has finished). A merged file is whole before the files it replaces go.
Readers take the newest row of each run_id, so seeing both for a moment is harmless, and a file that vanishes
while a reader lists it (merged meanwhile) makes the reader list again. Every file appears whole or not at all
(sweeps/storage.py).

Example::

    store = ResultStore("runs/store")           # or file://..., s3://bucket/prefix, memory://...
    store.write(rows, sweep_id="wsd-small", name=run_id)
    done = store.run_ids(sweep_id="wsd-small")   # resume: run only what is missing
    result = store.read(sweep_id="wsd-small", columns=["status"])   # .table, .corrupt_files, ...
    store.lineage_rows(sweep_id="wsd-small", lineage_id=lineage_id).write(rows, name=run_id)   # a trial
    store.compact(sweep_id="wsd-small")          # few files: reads stay fast at 10^5 rows (no trial running)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import posixpath
import re
import uuid
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from powersweep.file_threads import LOCAL_THREADS, REMOTE_THREADS, map_threads
from powersweep.store_layout import (
    COMPACTED_PREFIX,
    CURVES_DIR,
    LINEAGE_PREFIX,
    MERGED_PREFIXES,
    PARTITION,
    RESULTS_DIR,
    SET_ASIDE_DIR,
    WRITE_KEY,
    curve_owners,
    is_merged,
    sources,
    sources_metadata,
)
from powersweep.sweeps.curve_store import CURVE_SCHEMA, conform_curve, merge_points
from powersweep.sweeps.schema import (
    COLUMN_DOCS,
    REQUIRED,
    SCHEMA,
    STATUSES,
    StoreError,
    rows_to_table,
    table_to_frame,
)
from powersweep.sweeps.storage import HIDDEN_PREFIXES, Storage

__all__ = ["COLUMN_DOCS", "SCHEMA", "STATUSES", "Compaction", "ReadResult", "ResultStore", "StoreError"]

logger = logging.getLogger(__name__)

REPLACED_PREFIX = "replaced-"  # set-aside/sweep_id=<id>/replaced-<time>/: a sweep's files before --replace
ROW_GROUP_ROWS = 1_048_576  # rows per row group of a merged file: a column of a sweep is one range read
_READS = 10  # reads of a file rewritten in place meanwhile (a new version each) before it counts as broken
_RESCANS = 5  # listings a reader makes when files vanish under it (merged meanwhile) before it gives up
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
# The columns stored in each file: the partition column lives in the directory name.
_FILE_SCHEMA = pa.schema([field for field in SCHEMA if field.name != PARTITION])
_FILE_REQUIRED = [name for name in _FILE_SCHEMA.names if name in REQUIRED]
_ALWAYS_READ = ("run_id", "created_at")  # which row of a run is the newest
_CURVE_REQUIRED = [f.name for f in CURVE_SCHEMA if not f.nullable]
_FOOTER_ONLY = ()  # `columns` that read a file's footer and no rows
# the files a folder's readers look at: any file in results/ (a stray one is reported), curves as Parquet
_SUFFIX = {RESULTS_DIR: "", CURVES_DIR: ".parquet"}


@dataclasses.dataclass(frozen=True)
class ReadResult:
    """What ``ResultStore.read`` found."""

    table: pd.DataFrame  # one row per (sweep_id, run_id), columns of SCHEMA, sorted by sweep_id, run_id
    corrupt_files: list[str]  # "<path>: <reason>" for each file that could not be read; its rows are absent
    duplicates_dropped: int  # rows dropped because a newer row had the same (sweep_id, run_id)


@dataclasses.dataclass(frozen=True)
class Stock:
    """What ``ResultStore.take_stock`` found of a sweep: the files it moved aside and what stays readable."""

    set_aside: tuple[str, ...]  # "<old URI> -> <new URI> (<reason>)" for each file moved, results first
    run_ids: frozenset[str]  # the run ids of the readable result files
    curve_names: frozenset[str]  # the lineage ids of the readable curve files


@dataclasses.dataclass(frozen=True)
class Compaction:
    """What ``ResultStore.compact`` did to one sweep."""

    result_files: tuple[int, int]  # result files before and after
    rows: int  # rows in the sweep's results after
    curve_files: tuple[int, int]  # curve files before and after
    merged: tuple[str, ...]  # URIs of the files it wrote


@dataclasses.dataclass(frozen=True, eq=False)
class _File:
    """One Parquet file of a partition as read: its rows (None when only its footer was read), the writes it
    holds (its name, or a merged file's list) and why it cannot be read."""

    path: str
    table: pa.Table | None = None
    held: frozenset[str] = frozenset()
    problem: str | None = None  # why it cannot be read; None when it reads
    vanished: bool = False  # gone between the listing and the read
    write: bytes | None = None  # the id of the write that made it (WRITE_KEY); None in older files

    @property
    def name(self) -> str:
        return posixpath.basename(self.path).removesuffix(".parquet")

    @property
    def readable(self) -> bool:
        return self.problem is None and not self.vanished


class ResultStore:
    """Result rows and training curves of every sweep, stored as Parquet under ``uri``.

    ``uri`` is a local path, ``file://``, a pyarrow filesystem URI (``s3://bucket/prefix``,
    ``gs://``, ``abfs://``, ``hdfs://``) or any fsspec URI whose package is installed (``memory://``,
    ``az://``).
    """

    def __init__(self, uri: str):
        self.uri = uri
        self._storage = Storage(uri)
        self._fs, self._root = self._storage.fs, self._storage.root

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
    def _threads(self) -> int:
        """Threads that read the store's files at once: a local read is CPU-bound, a remote one waits."""
        return LOCAL_THREADS if self.local_dir is not None else REMOTE_THREADS

    @property
    def results_dir(self) -> str:
        """Path of the hive-partitioned dataset on ``filesystem``."""
        return self._path(RESULTS_DIR)

    # -- results --------------------------------------------------------------------------------------------

    def write(self, rows: Sequence[Mapping[str, Any]], *, sweep_id: str, name: str) -> str:
        """Validate ``rows`` and store them as ``results/sweep_id=<sweep_id>/<name>.parquet``.

        Columns left out of a row are null; ``created_at`` defaults to now (UTC). Invalid rows
        raise ``StoreError`` and write nothing. Writing the same ``name`` again replaces the file
        atomically, so a retried trial may simply write again. Returns the file's URI.
        """
        _check_segment("sweep_id", sweep_id)
        _check_name(name)
        try:
            table = rows_to_table(rows, defaults={PARTITION: sweep_id, "created_at": _now()})
        except StoreError as error:
            raise StoreError(f"write(sweep_id={sweep_id!r}, name={name!r}): {error}") from None
        _check_partition(table, sweep_id, name)
        path = self._partition(RESULTS_DIR, sweep_id) + f"/{name}.parquet"
        self._storage.put(path, _parquet_bytes(table.drop_columns([PARTITION])))
        return self._storage.uri_of(path)

    def has(self, *, sweep_id: str, name: str) -> bool:
        """Whether ``write(..., sweep_id=sweep_id, name=name)`` has completed and its rows read, in its own
        file or in a merged one (a truncated, overwritten or foreign file does not count)."""
        _check_segment("sweep_id", sweep_id)
        _check_name(name)
        own = self._load_result(self._partition(RESULTS_DIR, sweep_id) + f"/{name}.parquet", ("run_id",))
        return own.readable or name in self.stored_names(sweep_id=sweep_id)

    def stored_names(self, *, sweep_id: str, lineages: Collection[str] | None = None) -> set[str]:
        """The names of the sweep's completed writes whose rows read, wherever they are now. With
        ``lineages``, of the lineage files only those lineages' (a trial asks about its own lineages: the
        other lineage files need not be opened); every row file and compacted file counts."""
        _check_segment("sweep_id", sweep_id)

        def wanted(path: str) -> bool:
            name = posixpath.basename(path).removesuffix(".parquet")
            return lineages is None or not name.startswith(LINEAGE_PREFIX) or name in lineage_files

        lineage_files = {LINEAGE_PREFIX + lineage for lineage in lineages or ()}
        files = self._scan(RESULTS_DIR, sweep_id, lambda p: self._load_result(p, ("run_id",)), keep=wanted)
        return {name for f in files if f.readable for name in f.held}

    def read(self, *, sweep_id: str | None = None, columns: Sequence[str] | None = None) -> ReadResult:
        """Read every result (or one sweep's), skipping and reporting files that cannot be read; only
        ``columns`` (and sweep_id, run_id, created_at) when given, every column of SCHEMA otherwise.

        Rows sharing a (sweep_id, run_id) are collapsed to the one with the newest ``created_at``.
        A store that does not exist yet reads as an empty table with the columns.
        """
        if sweep_id is not None:
            _check_segment("sweep_id", sweep_id)
        wanted = _columns(columns)
        files = self._scan(RESULTS_DIR, sweep_id, lambda p: self._load_result(p, wanted))
        tables = [f.table for f in files if f.readable]
        corrupt = [f"{self._storage.uri_of(f.path)}: {f.problem}" for f in files if not f.readable]
        schema = _read_schema(wanted)
        frame = table_to_frame(pa.concat_tables(tables) if tables else schema.empty_table())
        frame, dropped = _drop_duplicates(frame)
        return ReadResult(table=frame, corrupt_files=corrupt, duplicates_dropped=dropped)

    def run_ids(self, *, sweep_id: str | None = None) -> set[str]:
        """The run_ids already stored: the sweep driver runs only the others.

        Rows of corrupt files are missing here (so those runs are run again) and are logged.
        """
        result = self.read(sweep_id=sweep_id, columns=["run_id"])
        for report in result.corrupt_files:
            logger.warning("results store %s: skipped unreadable file %s", self.uri, report)
        return set(result.table["run_id"])

    def lineage_rows(self, *, sweep_id: str, lineage_id: str) -> LineageRows:
        """The writer of the lineage's rows (``LineageRows``), holding the rows its file holds now; an
        unreadable file there is moved aside first (kept, never read)."""
        _check_segment("sweep_id", sweep_id)
        _check_segment("lineage_id", lineage_id)
        path = f"{self._partition(RESULTS_DIR, sweep_id)}/{LINEAGE_PREFIX}{lineage_id}.parquet"
        own = self._load_result(path, None)
        if not own.readable and not own.vanished:
            logger.warning("results store %s: %s", self.uri, self._move_aside(own, sweep_id, "result"))
        held = own.table if own.readable else None
        return LineageRows(self._storage, path, sweep_id, held, own.held if own.readable else frozenset())

    def compact(self, *, sweep_id: str, finished: Collection[str] | None = None) -> Compaction:
        """Merge the sweep's readable result files into one file, and its curves into one. A running
        lineage's trial rewrites its rows' file and its curve: of those, only the ``finished`` lineages' merge
        (None: every lineage, when no trial runs). Unreadable files stay where they are, for ``set_aside``.
        Safe while the sweep runs: a file is deleted only once a merged file holds its rows, and only if it
        did not change since it was read."""
        _check_segment("sweep_id", sweep_id)

        def done(path: str) -> bool:
            name = posixpath.basename(path).removesuffix(".parquet")
            return (
                finished is None
                or not name.startswith(LINEAGE_PREFIX)
                or name[len(LINEAGE_PREFIX) :] in finished
            )

        stamp = f"{COMPACTED_PREFIX}{_now().strftime('%Y%m%dT%H%M%S%fZ')}-{uuid.uuid4().hex[:8]}.parquet"
        before = self._storage.files(RESULTS_DIR, sweep_id)
        chosen, merged = [p for p in before if done(p)], []
        if len(chosen) > 1:
            made = self._merge_results(sweep_id, chosen, f"{self._partition(RESULTS_DIR, sweep_id)}/{stamp}")
            merged += [made] if made else []
        curve_paths = self._storage.files(CURVES_DIR, sweep_id, suffix=".parquet")
        made = self._compact_curves(sweep_id, curve_paths, finished, stamp)
        merged += [made] if made else []
        after = self._storage.files(RESULTS_DIR, sweep_id)
        rows = len(self.read(sweep_id=sweep_id, columns=["run_id"]).table)
        return Compaction(
            result_files=(len(before), len(after)),
            rows=rows,
            curve_files=(len(curve_paths), len(self._storage.files(CURVES_DIR, sweep_id, suffix=".parquet"))),
            merged=tuple(merged),
        )

    def set_aside(self, *, sweep_id: str, names: Collection[str]) -> list[str]:
        """Move each file of the sweep's results that cannot be read as rows (truncated, overwritten, another
        schema) to ``set-aside/``, where it is kept and never read, so that its runs are stored again: the
        files written as one of ``names``, and the store's own merged files. Returns ``"<old URI> -> <new
        URI> (<reason>)"`` for each file moved."""
        return self._set_aside_results(sweep_id, names)[0]

    def take_stock(self, *, sweep_id: str, names: Collection[str]) -> Stock:
        """``set_aside`` and ``set_aside_curves``, and the run ids and curve names left readable, from one
        read of each file: what a sweep's driver plans from, under its lock, before it trains."""
        moved, run_ids = self._set_aside_results(sweep_id, names)
        moved_curves, curve_names = self._set_aside_curves(sweep_id)
        return Stock(tuple(moved + moved_curves), frozenset(run_ids), frozenset(curve_names))

    def _set_aside_results(self, sweep_id: str, names: Collection[str]) -> tuple[list[str], set[str]]:
        """``set_aside``'s moves, and the run ids of the files that read."""
        _check_segment("sweep_id", sweep_id)
        files = self._scan(RESULTS_DIR, sweep_id, lambda p: self._load_result(p, ("run_id",)))
        moved = []
        for f in files:
            if f.readable or f.vanished:
                continue
            if f.name in names or is_merged(f.name):
                moved.append(self._move_aside(f, sweep_id, "result"))
            else:
                logger.warning("results store %s: skipped unreadable file %s", self.uri, f.path)
        return moved, {r for f in files if f.readable for r in f.table.column("run_id").to_pylist()}

    # -- curves ---------------------------------------------------------------------------------------------

    def write_curve(self, rows: Sequence[Mapping[str, Any]], *, sweep_id: str, name: str) -> str:
        """Merge curve points (rows of ``sweeps.curve_store.CURVE_SCHEMA``) into the lineage's points stored
        so far (``read_curve``) by key, and store them as ``curves/sweep_id=<sweep_id>/<name>.parquet``,
        atomically; an unreadable file there is moved aside first. Returns the file's URI."""
        return self.curve_writer(sweep_id=sweep_id, name=name).write(rows)

    def curve_writer(self, *, sweep_id: str, name: str) -> LineageCurve:
        """The writer of the lineage ``name``'s curve (``LineageCurve``), holding its points stored so far; an
        unreadable file there is moved aside first (kept, never read)."""
        _check_segment("sweep_id", sweep_id)
        _check_name(name)
        path = self._partition(CURVES_DIR, sweep_id) + f"/{name}.parquet"
        own = self._load_curve(path, None)
        if not own.readable and not own.vanished:  # broken since the sweep started: kept aside, never lost
            logger.warning("results store %s: %s", self.uri, self._move_aside(own, sweep_id, "curve"))
        return LineageCurve(
            self._storage, path, own.table if own.readable else self._merged_curve(sweep_id, name)
        )

    def read_curve(self, *, sweep_id: str, name: str) -> pa.Table | None:
        """One lineage's stored curve (``name``: its id), conformed to CURVE_SCHEMA, from its own file or a
        compacted one; None if there is none or it cannot be read (``write_curve`` replaces such a file)."""
        _check_segment("sweep_id", sweep_id)
        _check_name(name)
        own = self._load_curve(self._partition(CURVES_DIR, sweep_id) + f"/{name}.parquet", None)
        return own.table if own.readable else self._merged_curve(sweep_id, name)

    def read_curves(self, *, sweep_id: str | None = None) -> ReadResult:
        """Every stored curve point (or one sweep's), with a sweep_id column, one copy of each lineage's
        (``store_layout.curve_owners``); unreadable files are skipped and named in ``corrupt_files``. Empty
        (with the columns) when there are none."""
        if sweep_id is not None:
            _check_segment("sweep_id", sweep_id)
        files = self._scan(CURVES_DIR, sweep_id, lambda p: self._load_curve(p, None))
        tables = []
        for partition, group in _by_partition(f for f in files if f.readable).items():
            for table in _owned(group).values():
                tables.append(table.add_column(0, PARTITION, pa.array([partition] * len(table), pa.string())))
        corrupt = [f"{self._storage.uri_of(f.path)}: {f.problem}" for f in files if not f.readable]
        schema = pa.schema([pa.field(PARTITION, pa.string()), *CURVE_SCHEMA])
        frame = (pa.concat_tables(tables) if tables else schema.empty_table()).to_pandas()
        return ReadResult(table=frame, corrupt_files=corrupt, duplicates_dropped=0)

    def curve_names(self, *, sweep_id: str) -> set[str]:
        """Names (lineage ids) of the sweep's stored, readable curves, from the files' footers."""
        return self.curve_inventory(sweep_id=sweep_id)[0]

    def unreadable_curves(self, *, sweep_id: str) -> list[str]:
        """ "<URI>: <reason>" for each of the sweep's curve files whose footer cannot be read."""
        return self.curve_inventory(sweep_id=sweep_id)[1]

    def curve_inventory(self, *, sweep_id: str) -> tuple[set[str], list[str]]:
        """``curve_names`` and ``unreadable_curves`` from one read of the curve files' footers."""
        files = self._curve_footers(sweep_id)
        names = {name for f in files if f.readable for name in f.held}
        return names, [f"{self._storage.uri_of(f.path)}: {f.problem}" for f in files if f.problem]

    def set_aside_curves(self, *, sweep_id: str) -> list[str]:
        """Move each of the sweep's curve files that cannot be read to ``set-aside/`` (kept, never read), as
        ``set_aside`` does for results: a lineage trained again writes a new curve, never into a broken one.
        Returns ``"<old URI> -> <new URI> (<reason>)"`` for each file moved."""
        return self._set_aside_curves(sweep_id)[0]

    def _set_aside_curves(self, sweep_id: str) -> tuple[list[str], set[str]]:
        """``set_aside_curves``'s moves, and the names of the curves that read."""
        files = self._curve_footers(sweep_id)
        moved = [self._move_aside(f, sweep_id, "curve") for f in files if f.problem]
        return moved, {name for f in files if f.readable for name in f.held}

    # -- sweeps, set aside and metadata ---------------------------------------------------------------------

    def replace_sweep(self, *, sweep_id: str) -> str | None:
        """Move every result and curve file of the sweep, and its stored spec, to
        ``set-aside/sweep_id=<id>/replaced-<UTC time>/`` (kept, never read), so that the sweep starts empty.
        Returns that folder's URI, or None when the sweep had nothing stored."""
        _check_segment("sweep_id", sweep_id)
        stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
        folder = self._path(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{REPLACED_PREFIX}{stamp}")
        spec = self._path(f"sweeps/{sweep_id}/spec.json")
        moves = [
            (p, f"{folder}/{kind}/{posixpath.basename(p)}")
            for kind in (RESULTS_DIR, CURVES_DIR)
            for p in self._storage.files(kind, sweep_id, suffix=_SUFFIX[kind])
        ]
        if self._fs.get_file_info(spec).is_file:
            moves.append((spec, f"{folder}/spec.json"))
        for source, destination in moves:
            self._storage.move(source, destination, what="move a replaced sweep's file aside")
        return self._storage.uri_of(folder) if moves else None

    def replaced(self, *, sweep_id: str) -> list[str]:
        """ "<URI> (<n> rows, <m> curves)", files of each, for each earlier version of the sweep that
        ``replace_sweep`` set aside, oldest first."""
        return self.set_aside_inventory(sweep_id=sweep_id)[1]

    def set_aside_files(self, *, sweep_id: str) -> list[str]:
        """URIs of the files ``set_aside`` moved out of the sweep's partition, oldest first."""
        return self.set_aside_inventory(sweep_id=sweep_id)[0]

    def set_aside_inventory(self, *, sweep_id: str) -> tuple[list[str], list[str]]:
        """``set_aside_files`` and ``replaced`` from one listing of the sweep's set-aside folder."""
        _check_segment("sweep_id", sweep_id)
        base = self._path(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}")
        infos = self._fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        names = sorted((info.mtime_ns or 0, info.base_name) for info in infos if info.is_file)
        files = [self._storage.uri_of(f"{base}/{name}") for _, name in names]
        replaced = []
        for name in sorted(
            i.base_name
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith(REPLACED_PREFIX)
        ):
            rows = sum(self._held(f"{base}/{name}/{RESULTS_DIR}", lambda f: f.table.num_rows))
            curves = sum(self._held(f"{base}/{name}/{CURVES_DIR}", lambda f: len(f.held)))
            replaced.append(f"{self._storage.uri_of(f'{base}/{name}')} ({rows} rows, {curves} curves)")
        return files, replaced

    def _held(self, folder: str, count: Callable[[_File], int]) -> list[int]:
        """``count`` of each readable Parquet file in ``folder`` (its footer read: a table of no columns)."""
        infos = self._fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
        files = [
            self._open(i.path, lambda parquet: parquet.read(columns=[], use_threads=False), rows=False)
            for i in infos
            if i.is_file and i.path.endswith(".parquet")
        ]
        return [count(f) for f in files if f.readable]

    def sweep_ids(self) -> list[str]:
        """The sweeps whose spec is stored (``sweeps/<sweep_id>/spec.json``), sorted."""
        infos = self._fs.get_file_info(pafs.FileSelector(self._path("sweeps"), allow_not_found=True))
        names = [i.base_name for i in infos if i.type == pafs.FileType.Directory]
        return sorted(n for n in names if self._fs.get_file_info(self._path(f"sweeps/{n}/spec.json")).is_file)

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
        self._storage.put(self._path(relpath), text.encode())
        return self._storage.uri_of(self._path(relpath))

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
        self._storage.delete(self._path(relpath))

    # -- internals ------------------------------------------------------------------------------------------

    def _scan(
        self, folder: str, sweep_id: str | None, load: Callable[[str], _File], *, keep=lambda path: True
    ) -> list[_File]:
        """The visible files of ``folder``'s partition (those ``keep`` accepts), each loaded; a file that
        vanished between the listing and its read was merged into another, which a new listing shows."""
        for _ in range(_RESCANS):
            paths = self._storage.files(folder, sweep_id, suffix=_SUFFIX[folder])
            files = map_threads(load, [p for p in paths if keep(p)], threads=self._threads)
            if not any(f.vanished for f in files):
                return files
        logger.warning("results store %s: files kept vanishing while read; read what stayed", self.uri)
        return [f for f in files if not f.vanished]

    def _open(
        self, path: str, read: Callable[[pq.ParquetFile], pa.Table | None], *, rows: bool = True
    ) -> _File:
        """Load the file at ``path`` with ``read`` (given the opened file), which reads rows, or with
        ``rows=False`` the footer only.

        A compacted file is written once under its own name: read by ranges, the footer then the columns
        asked for. Any other file may be rewritten in place (a lineage's rows and curve, with each write), so
        its rows are read with the whole file in one request: an object store answers a GET with one
        version, where a footer read before a rewrite and columns read after it would not match. Yet an
        object store's read is a size request then a ranged GET, and a version written between the two is cut
        at the old size (no footer): a file that reads as broken is read again when it changed meanwhile, and
        counts as broken when one version of it read as broken twice."""
        name = posixpath.basename(path).removesuffix(".parquet")
        rewritten = not name.startswith(COMPACTED_PREFIX)
        whole = rows and rewritten
        problem, failed_version = None, None
        for _ in range(_READS if rewritten else 1):
            try:
                with self._fs.open_input_file(path) as handle:
                    source = pa.BufferReader(handle.read()) if whole else handle
                    parquet = pq.ParquetFile(
                        source, pre_buffer=not whole
                    )  # ranges of a remote file coalesced
                    metadata = parquet.schema_arrow.metadata or {}
                    held = sources(name, metadata)
                    table = read(parquet)
            except FileNotFoundError:
                return _File(path, vanished=True)
            except (pa.ArrowException, OSError, ValueError) as error:
                # an object store answers a file deleted between its open and its read with another error
                info = self._fs.get_file_info(path)
                if info.type == pafs.FileType.NotFound:
                    return _File(path, vanished=True)
                problem = f"{type(error).__name__}: {error}"
                if (info.size, info.mtime) == failed_version:
                    break
                failed_version = (info.size, info.mtime)
                continue
            return _File(path, table, held, write=metadata.get(WRITE_KEY))
        return _File(path, problem=problem)

    def _load_result(self, path: str, columns: Sequence[str] | None) -> _File:
        """A result file's rows (``columns`` of them, all when None) conformed to SCHEMA."""
        sweep_id = _partition_value(posixpath.relpath(path, self.results_dir))
        if sweep_id is None:
            why = f"not a {PARTITION}=<id>/<name>.parquet file of {RESULTS_DIR}/: move or delete it"
            return _File(path, problem=why)
        return self._open(path, lambda parquet: _conform(parquet, sweep_id, columns))

    def _load_curve(self, path: str, columns: Sequence[str] | None) -> _File:
        """A curve file's points conformed to CURVE_SCHEMA (its footer only with ``columns=()``)."""

        def read(parquet: pq.ParquetFile) -> pa.Table | None:
            missing = [c for c in _CURVE_REQUIRED if c not in parquet.schema_arrow.names]
            if missing:
                raise ValueError(f"not a curve file: column(s) {missing} missing")
            return None if columns == _FOOTER_ONLY else conform_curve(parquet.read(use_threads=False))

        return self._open(path, read, rows=columns != _FOOTER_ONLY)

    def _curve_footers(self, sweep_id: str) -> list[_File]:
        _check_segment("sweep_id", sweep_id)
        return self._scan(CURVES_DIR, sweep_id, lambda p: self._load_curve(p, _FOOTER_ONLY))

    def _merged_curve(self, sweep_id: str, name: str) -> pa.Table | None:
        """The lineage ``name``'s points in the sweep's compacted curve files: the newest copy."""
        compacted = self._scan(
            CURVES_DIR,
            sweep_id,
            lambda p: self._load_curve(p, _FOOTER_ONLY),
            keep=lambda p: is_merged(posixpath.basename(p)),  # a lineage's first write opens no other's file
        )
        holders = [f for f in compacted if f.readable and name in f.held]
        for f in reversed(holders):  # by name, so by time: the newest first
            loaded = self._load_curve(f.path, None)
            if loaded.readable:
                return loaded.table.filter(pc.equal(loaded.table.column("lineage_id"), name))
        return None

    def _merge_results(self, sweep_id: str, paths: list[str], into: str) -> str | None:
        """Write the readable rows of the files ``paths`` (the newest row of each run_id) to ``into``, then
        delete those files that did not change meanwhile. None when none of them reads."""
        loaded = map_threads(lambda p: self._load_result(p, None), paths, threads=self._threads)
        files = [f for f in loaded if f.readable]
        if len(files) < 2 and all(is_merged(f.name) for f in files):
            return None  # nothing new to merge
        table = _newest_rows(pa.concat_tables([f.table for f in files])).drop_columns([PARTITION])
        held = {name for f in files for name in f.held}
        return self._replace_with(into, table, held, files)

    def _compact_curves(
        self, sweep_id: str, paths: list[str], finished: Collection[str] | None, name: str
    ) -> str | None:
        """Merge the own curve files of the ``finished`` lineages (None: all) and the compacted ones into one
        compacted file, with one copy of each lineage's points (``curve_owners``, over every curve file of
        the sweep)."""
        loaded = map_threads(lambda p: self._load_curve(p, None), paths, threads=self._threads)
        readable = [f for f in loaded if f.readable]
        chosen = [f for f in readable if is_merged(f.name) or finished is None or f.name in finished]
        if len(chosen) < 2 and not any(not is_merged(f.name) for f in chosen):
            return None  # nothing new to merge
        owned = _owned(readable)
        parts = [owned[f] for f in chosen if f in owned]
        table = pa.concat_tables(parts) if parts else CURVE_SCHEMA.empty_table()
        held = set(pc.unique(table.column("lineage_id")).to_pylist())
        into = f"{self._partition(CURVES_DIR, sweep_id)}/{name}"
        return self._replace_with(into, table, held, chosen)

    def _replace_with(self, into: str, table: pa.Table, held: Iterable[str], files: list[_File]) -> str:
        """Write ``table`` as the merged file ``into`` (holding the writes ``held``), then delete ``files``:
        each only if it still holds the write that was read (a file written again meanwhile holds rows the
        merge lacks; an older file without a write id, if its size and time did not change)."""
        stats = {f.path: self._storage.stat(f.path) for f in files if f.write is None}
        self._storage.put(into, _parquet_bytes(table, sources_metadata(held), row_group_size=ROW_GROUP_ROWS))
        for f in files:
            if f.path == into:
                continue  # replaced by the merge itself
            if self._write_of(f.path) == f.write if f.write else self._storage.stat(f.path) == stats[f.path]:
                self._storage.delete(f.path)
        return self._storage.uri_of(into)

    def _write_of(self, path: str) -> bytes | None:
        """The write id in the footer of the file at ``path`` now; None if there is none or it is broken."""
        f = self._open(path, lambda parquet: None, rows=False)
        return f.write if f.readable else None

    def _move_aside(self, f: _File, sweep_id: str, kind: str) -> str:
        """Move an unreadable ``kind`` file ('result' or 'curve') to the sweep's set-aside folder, where
        ``set_aside_files`` lists it; returns "<old URI> -> <new URI> (<reason>)"."""
        stamp = _now().strftime("%Y%m%dT%H%M%S%fZ")
        suffix = ".curve" if kind == "curve" else ""
        destination = self._path(f"{SET_ASIDE_DIR}/{PARTITION}={sweep_id}/{f.name}{suffix}.{stamp}.parquet")
        self._storage.move(f.path, destination, what=f"move an unreadable {kind} file aside")
        return f"{self._storage.uri_of(f.path)} -> {self._storage.uri_of(destination)} ({f.problem})"

    def _partition(self, folder: str, sweep_id: str) -> str:
        return self._path(f"{folder}/{PARTITION}={sweep_id}")

    def _path(self, relpath: str) -> str:
        return self._storage.path(relpath)


class LineageRows:
    """A lineage's rows as its trial stores them: one file, ``results/sweep_id=<id>/lineage-<id>.parquet``,
    rewritten whole and atomically with each write, from the rows held in memory (those of the file when the
    writer was made, then each write's). One trial at a time writes a lineage, and ``compact`` merges only
    finished lineages' files, so no other writer changes the file meanwhile. Made by
    ``ResultStore.lineage_rows``."""

    def __init__(
        self, storage: Storage, path: str, sweep_id: str, table: pa.Table | None, held: frozenset[str]
    ):
        self._storage, self._path, self._sweep_id = storage, path, sweep_id
        self._table = table if table is not None else SCHEMA.empty_table()
        self._run_ids = set(self._table.column("run_id").to_pylist())
        self._held = set(held)

    def write(self, rows: Sequence[Mapping[str, Any]], *, name: str) -> str:
        """Validate ``rows`` (as ``ResultStore.write`` does) and store them in the lineage's file with the
        rows stored before, those of the same run_id replaced, under the write ``name`` (its run_id). Invalid
        rows raise ``StoreError`` and write nothing. Returns the file's URI."""
        _check_name(name)
        try:
            new = rows_to_table(rows, defaults={PARTITION: self._sweep_id, "created_at": _now()})
        except StoreError as error:
            raise StoreError(f"write(sweep_id={self._sweep_id!r}, name={name!r}): {error}") from None
        _check_partition(new, self._sweep_id, name)
        kept, new_ids = self._table, new.column("run_id").to_pylist()
        if self._run_ids.intersection(new_ids):  # a row written again (a retried trial): the new copy only
            kept = kept.filter(pc.invert(pc.is_in(kept.column("run_id"), new.column("run_id"))))
        table = pa.concat_tables([kept, new])
        data = _parquet_bytes(
            table.drop_columns([PARTITION]), sources_metadata({*self._held, name}), fast=True
        )
        self._storage.put(self._path, data)
        self._table, self._run_ids = table, self._run_ids.union(new_ids)
        self._held.add(name)
        return self._storage.uri_of(self._path)


class LineageCurve:
    """A lineage's training curve as its trial stores it: one file,
    ``curves/sweep_id=<id>/<lineage_id>.parquet``, rewritten whole and atomically with each write, its points
    merged by key (``curve_store.merge_points``) into those held in memory. Made by
    ``ResultStore.curve_writer``."""

    def __init__(self, storage: Storage, path: str, table: pa.Table | None):
        self._storage, self._path, self._table = storage, path, table

    def points(self) -> list[dict]:
        """The points stored so far, as rows."""
        return [] if self._table is None else self._table.to_pylist()

    def write(self, rows: Sequence[Mapping[str, Any]]) -> str:
        """Merge curve points (rows of ``CURVE_SCHEMA``) into the lineage's, and store them; returns the
        file's URI."""
        table = merge_points(self._table, rows)
        self._storage.put(self._path, _parquet_bytes(table, fast=True))
        self._table = table
        return self._storage.uri_of(self._path)


def _columns(columns: Sequence[str] | None) -> list[str] | None:
    """The file columns a read asks for (None: all), with the ones every read needs; StoreError for a name
    that is not a column."""
    if columns is None:
        return None
    unknown = [c for c in columns if c not in SCHEMA.names]
    if unknown:
        raise StoreError(f"columns={unknown}: not columns of the results; choose from {SCHEMA.names}")
    return [name for name in _FILE_SCHEMA.names if name in {*columns, *_ALWAYS_READ}]


def _read_schema(columns: Sequence[str] | None) -> pa.Schema:
    """The schema of a read of ``columns`` (None: all): sweep_id, then the file columns in SCHEMA's order."""
    names = {PARTITION, *(columns if columns is not None else SCHEMA.names)}
    return pa.schema([field for field in SCHEMA if field.name in names])


def _conform(parquet: pq.ParquetFile, sweep_id: str, columns: Sequence[str] | None) -> pa.Table:
    """The file's rows with the columns asked for (all of SCHEMA's when None), sweep_id taken from the file's
    directory; ValueError if the file is not a results file.

    A file of other code or an older SCHEMA fits: optional columns it lacks become null, extra columns are
    ignored and dictionary-encoded columns are decoded, so readers never see categorical surprises.
    """
    present = set(parquet.schema_arrow.names)
    missing = [name for name in _FILE_REQUIRED if name not in present]
    if missing:
        raise ValueError(f"required column {missing[0]!r} is missing")
    fields = [f for f in _FILE_SCHEMA if columns is None or f.name in columns]
    table = parquet.read(columns=[f.name for f in fields if f.name in present], use_threads=False)
    arrays = [
        table.column(f.name).cast(f.type) if f.name in present else pa.nulls(len(table), f.type)
        for f in fields
    ]
    for field, column in zip(fields, arrays):
        if not field.nullable and column.null_count:
            raise ValueError(f"required column {field.name!r} has {column.null_count} null values")
    partition = pa.array([sweep_id] * len(table), pa.string())
    return pa.Table.from_arrays([partition, *arrays], schema=_read_schema([f.name for f in fields]))


def _newest_rows(table: pa.Table) -> pa.Table:
    """The newest row (``created_at``) of each run_id of one sweep's rows, sorted by run_id; on equal
    created_at the row further down ``table`` wins, as in ``_drop_duplicates``."""
    position = pa.array(np.arange(len(table)))
    order = pc.sort_indices(
        table.append_column("_position", position),
        sort_keys=[("run_id", "ascending"), ("created_at", "descending"), ("_position", "descending")],
    )
    table = table.take(order)
    ids = table.column("run_id").to_numpy(zero_copy_only=False)
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    return table.filter(pa.array(first))


def _drop_duplicates(frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Keep the newest row per (sweep_id, run_id); on equal created_at, the file sorting last wins."""
    newest_last = frame.sort_values("created_at", kind="stable")
    kept = newest_last.drop_duplicates([PARTITION, "run_id"], keep="last")
    kept = kept.sort_values([PARTITION, "run_id"], kind="stable").reset_index(drop=True)
    return kept, len(frame) - len(kept)


def _by_partition(files: Iterable[_File]) -> dict[str, list[_File]]:
    groups: dict[str, list[_File]] = {}
    for f in files:
        groups.setdefault(posixpath.basename(posixpath.dirname(f.path)).partition("=")[2], []).append(f)
    return groups


def _owned(files: list[_File]) -> dict[_File, pa.Table]:
    """Each loaded curve file of one sweep -> its points of the lineages it owns (``curve_owners``)."""
    owners = curve_owners((f.name, f.held) for f in files)
    owned = {}
    for f in files:
        mine = [lineage for lineage in f.held if owners.get(lineage) == f.name]
        if not is_merged(f.name):
            owned[f] = f.table
        elif mine:
            owned[f] = f.table.filter(pc.is_in(f.table.column("lineage_id"), pa.array(mine, pa.string())))
    return owned


def _parquet_bytes(
    table: pa.Table,
    metadata: Mapping[bytes, bytes] | None = None,
    *,
    row_group_size: int | None = None,
    fast: bool = False,
) -> bytes:
    """Encode in memory first, so a failure while encoding never reaches the filesystem; the footer holds
    ``metadata`` and a new write id (WRITE_KEY). ``fast`` for a file rewritten with each write (a lineage's
    rows and curve): no statistics or dictionaries, snappy, twice as fast as zstd at about the same size;
    ``compact`` writes them again with zstd."""
    table = table.replace_schema_metadata({**(metadata or {}), WRITE_KEY: uuid.uuid4().hex.encode()})
    sink = pa.BufferOutputStream()
    encoding = {"compression": "snappy", "write_statistics": False, "use_dictionary": False} if fast else {}
    pq.write_table(table, sink, **({"compression": "zstd"} | encoding), row_group_size=row_group_size)
    return sink.getvalue().to_pybytes()


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


def _check_name(name: Any) -> None:
    _check_segment("name", name)
    if is_merged(name):
        raise StoreError(
            f"name={name!r}: names starting with {' or '.join(map(repr, MERGED_PREFIXES))} are the store's "
            "merged files; choose another name"
        )


def _check_relpath(relpath: Any) -> None:
    parts = relpath.split("/") if isinstance(relpath, str) else [""]
    example = "e.g. 'sweeps/<sweep_id>/spec.json'"
    if any(part in ("", ".", "..") or part.startswith(HIDDEN_PREFIXES) for part in parts):
        raise StoreError(
            f"relpath={relpath!r}: must be a relative path without '.', '..' or hidden parts, {example}"
        )
    if parts[0] == RESULTS_DIR:
        raise StoreError(
            f"relpath={relpath!r}: {RESULTS_DIR}/ holds only result Parquet files; use {example}"
        )


def _partition_value(relpath: str) -> str | None:
    """``sweep_id=<id>/<name>.parquet`` -> ``<id>``; None for any other file."""
    parts = relpath.split("/")
    key, _, value = parts[0].partition("=")
    is_result = len(parts) == 2 and parts[1].endswith(".parquet") and key == PARTITION
    return value if is_result and _SEGMENT.fullmatch(value) else None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
