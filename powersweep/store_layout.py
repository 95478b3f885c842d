"""Where a results store keeps what: the folders and file names that its writer (sweeps/store.py) and its
readers (analysis) agree on, and which copy of a row or curve a reader takes.

Under the store's root::

    results/sweep_id=<id>/<name>.parquet            # one write (`ResultStore.write`): rows under a name
    results/sweep_id=<id>/lineage-<lineage_id>.parquet   # a lineage's rows, rewritten by its trial per row
    results/sweep_id=<id>/compacted-<time>-<hex>.parquet # `powersweep compact`: many files' rows in one
    curves/sweep_id=<id>/<lineage_id>.parquet       # a lineage's training curve, rewritten as it trains
    curves/sweep_id=<id>/compacted-<time>-<hex>.parquet  # finished lineages' curves in one file
    set-aside/sweep_id=<id>/...                     # unreadable files and replaced sweeps: kept, never read

A merged file (``lineage-`` or ``compacted-``) names the writes it holds in its footer (the Arrow schema's
metadata, ``SOURCES_KEY``: a JSON list of names; a lineage file's are its rows' run ids), so that a reader
knows what it holds without reading its rows. A merged file is complete before the files it replaces go: a
reader may see both for a moment, and takes one copy (results: the newest row of a run_id; curves:
``curve_owners``).

This module imports nothing but the standard library: every layer may read a store.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

RESULTS_DIR = "results"
CURVES_DIR = "curves"
SET_ASIDE_DIR = "set-aside"  # unreadable files moved out of the way, and replaced sweeps: never read
PARTITION = "sweep_id"  # results/sweep_id=<id>/: the partition column lives in the directory name
LINEAGE_PREFIX = "lineage-"  # a lineage's rows, as its trial stores them
COMPACTED_PREFIX = "compacted-"  # rows or curves that `compact` merged
MERGED_PREFIXES = (LINEAGE_PREFIX, COMPACTED_PREFIX)  # names no write may take: the store's own files
SOURCES_KEY = b"powersweep.sources"  # a merged file's footer: the names of the files it replaced
# every file's footer: an id of the write that made it. A merge deletes a file it read only if the file still
# holds that write (a row written again meanwhile holds one the merge lacks); an object store's modification
# time, to the second, cannot tell.
WRITE_KEY = b"powersweep.write"


def is_merged(name: str) -> bool:
    """Whether the file ``name`` (without .parquet) is one the store merged from others."""
    return name.startswith(MERGED_PREFIXES)


def sources(name: str, metadata: Mapping[bytes, bytes] | None) -> frozenset[str]:
    """The names of the writes a file holds: its own name for a plain file, the list in a merged file's
    footer (``metadata``: its Arrow schema's metadata) for a merged one. ValueError if a merged file's list
    is missing or not a list of names."""
    if not is_merged(name):
        return frozenset({name})
    try:
        names = json.loads((metadata or {})[SOURCES_KEY])
    except (KeyError, ValueError):
        raise ValueError(f"merged file {name!r} has no readable {SOURCES_KEY.decode()} list") from None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"merged file {name!r}: {SOURCES_KEY.decode()} is not a list of names")
    return frozenset(names)


def sources_metadata(names: Iterable[str]) -> dict[bytes, bytes]:
    """A merged file's footer entry for the writes it holds."""
    return {SOURCES_KEY: json.dumps(sorted(set(names))).encode()}


def curve_owners(files: Iterable[tuple[str, frozenset[str]]]) -> dict[str, str]:
    """lineage id -> the name of the curve file a reader takes its points from, given each readable curve
    file's (name, sources): the lineage's own file if there is one (it is rewritten from every copy of the
    lineage's points, so it holds them all), else the last compacted file (in name order: by time) that
    holds it."""
    owners: dict[str, str] = {}
    for name, held in sorted(files, key=lambda file: (not is_merged(file[0]), file[0])):
        for lineage in held:
            owners[lineage] = name  # own files sort after merged ones and win
    return owners
