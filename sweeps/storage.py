"""The filesystem under a store's URI: paths, whole-file writes, moves, listings and the errors a person can
act on. The results store (sweeps/store.py) decides what the files mean; this module only keeps them whole.

Every file appears whole or not at all. Object stores (s3, gcs, azure) replace an object in one PUT, so they
are written directly; every other filesystem gets a hidden temporary file in the same directory (leading '.',
skipped by every reader) that is then renamed.
"""

from __future__ import annotations

import errno
import os
import posixpath
import uuid
from collections.abc import Callable
from typing import TypeVar

import pyarrow.fs as pafs

from powersweep.proxy_models.filesystems import is_object_store, resolve
from powersweep.store_layout import PARTITION
from powersweep.sweeps.schema import StoreError

T = TypeVar("T")
HIDDEN_PREFIXES = (".", "_")  # the prefixes pyarrow.dataset discovery skips by default


class Storage:
    """The files under ``uri``: a local path, ``file://``, a pyarrow filesystem URI (``s3://bucket/prefix``,
    ``gs://``, ``abfs://``, ``hdfs://``) or any fsspec URI whose package is installed (``memory://``,
    ``az://``). Paths are the filesystem's; relpaths are relative to the root."""

    def __init__(self, uri: str):
        self.uri = uri
        self.fs, self.root = resolve(uri, what="storage URI", error=StoreError)
        self.whole_objects = is_object_store(self.fs)

    def path(self, relpath: str) -> str:
        return posixpath.join(self.root, relpath)

    def uri_of(self, path: str) -> str:
        """The URI a person can find ``path`` (a path on the filesystem) under; a query of the store's URI
        (``s3://bucket/prefix?endpoint_override=...``) stays at the end."""
        base, question, query = self.uri.partition("?")
        return f"{base.rstrip('/')}/{posixpath.relpath(path, self.root)}{question}{query}"

    def uri_for(self, relpath: str) -> str:
        """The URI of the file at ``relpath`` under the root."""
        return self.uri_of(self.path(relpath))

    def files(self, folder: str, sweep_id: str | None, *, suffix: str = "") -> list[str]:
        """Paths of the visible files (ending in ``suffix``) of ``folder``'s partition of ``sweep_id`` (of
        every sweep when None), sorted, so reads are deterministic."""
        base = self.path(folder) if sweep_id is None else self.path(f"{folder}/{PARTITION}={sweep_id}")
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(
            i.path for i in infos if i.is_file and i.path.endswith(suffix) and not _is_hidden(i.path, base)
        )

    def stat(self, path: str) -> tuple[int | None, int | None] | None:
        """(size, mtime in ns) of the file at ``path``; None if there is none."""
        info = self.fs.get_file_info(path)
        return (info.size, info.mtime_ns) if info.is_file else None

    def put(self, path: str, data: bytes) -> None:
        """Make ``path`` hold ``data``, with no moment where a reader sees part of it."""
        self.guarded("write", path, lambda: self._put(path, data))

    def move(self, source: str, destination: str, *, what: str) -> None:
        def move() -> None:
            self.fs.create_dir(posixpath.dirname(destination), recursive=True)
            self.fs.move(source, destination)

        self.guarded(what, destination, move)

    def delete(self, path: str) -> None:
        """Remove the file at ``path`` if it is there and can be removed."""
        _delete_quietly(self.fs, path)

    def guarded(self, what: str, path: str, action: Callable[[], T]) -> T:
        """Run a write; a store that refuses it (read-only, permissions, full) is one line naming it."""
        try:
            return action()
        except OSError as error:
            relpath = posixpath.relpath(path, self.root)
            raise StoreError(
                f"storage URI {self.uri!r}: cannot {what} ({relpath}): {write_failure(error)}"
            ) from error  # kept for a caller that words the refusal its own way (cluster/storage_check.py)

    def _put(self, path: str, data: bytes) -> None:
        if self.whole_objects:
            _write_bytes(self.fs, path, data)  # a single PUT: the object appears complete or not at all
            return
        directory, basename = posixpath.split(path)
        self.fs.create_dir(directory, recursive=True)
        temporary = f"{directory}/.{basename}.{uuid.uuid4().hex}.tmp"
        try:
            _write_bytes(self.fs, temporary, data)
            self.fs.move(temporary, path)
        except BaseException:
            _delete_quietly(self.fs, temporary)
            raise


def _write_bytes(filesystem: pafs.FileSystem, path: str, data: bytes) -> None:
    with filesystem.open_output_stream(path, compression=None) as stream:
        stream.write(data)


def _delete_quietly(filesystem: pafs.FileSystem, path: str) -> None:
    try:
        filesystem.delete_file(path)
    except OSError:
        pass  # never created, or already gone; readers skip hidden files anyway


def _is_hidden(path: str, base: str) -> bool:
    """Temporary files and the like: skipped here as by pyarrow.dataset discovery."""
    return any(part.startswith(HIDDEN_PREFIXES) for part in posixpath.relpath(path, base).split("/"))


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
