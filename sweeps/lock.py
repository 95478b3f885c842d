"""One driver per sweep: a lock held while a driver runs, naming its host and pid.

On a local or shared filesystem the lock is an advisory `flock` on `<store>/sweeps/<name>/driver.lock`: the
kernel drops it when the holder dies, however it dies, so a lock left by a killed driver is stale by
construction and the next driver takes it (and says whose it was). The file keeps the holder's host, pid and
start time, for the error a second driver prints. On an object store, where nothing can be locked, the file
is a claim: a claim by a process that is gone from this host is stale; one from another host is refused,
and the message says which file to delete once that driver is known to be gone.

Example::

    with SweepLock(storage, "wsd-small") as lock:   # SweepLockError if another driver runs the sweep
        ...                                        # lock.previous: the dead holder it replaced, if any
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import socket
import uuid

import psutil

from powersweep.sweeps.storage import Storage, write_failure
from powersweep.sweeps.store import ResultStore, StoreError

LOCK_NAME = "driver.lock"


class SweepLockError(StoreError):
    """Another driver holds the sweep's lock; the message names its host and pid and the fix."""


def holder() -> dict:
    """This process as a lock holder: host, pid, the process's start time (pids are reused) and when."""
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "process_start": psutil.Process().create_time(),
        "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "token": uuid.uuid4().hex,
    }


def is_alive(owner: dict) -> bool | None:
    """Whether the process `owner` names is running: None when it ran on another host (cannot tell)."""
    if owner.get("host") != socket.gethostname():
        return None
    try:
        process = psutil.Process(int(owner["pid"]))
        same = abs(process.create_time() - float(owner["process_start"])) < 1.0
        return same and process.status() != psutil.STATUS_ZOMBIE  # killed but not yet reaped: dead
    except (psutil.NoSuchProcess, KeyError, TypeError, ValueError):
        return False


def describe(owner: dict) -> str:
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')} (since {owner.get('since', '?')})"


class SweepLock:
    """The sweep's driver lock, taken on entry and released on exit (see the module docstring)."""

    def __init__(self, storage: str, sweep_id: str):
        self.storage, self.sweep_id = storage, sweep_id
        self.relpath = f"sweeps/{sweep_id}/{LOCK_NAME}"
        self.previous: dict | None = None  # the stale holder this lock replaced
        self._fd: int | None = None
        self._store: ResultStore | None = None
        self._me = holder()

    def __enter__(self) -> SweepLock:
        local = _local_path(self.storage)
        if local is not None:
            self._flock(os.path.join(local, "sweeps", self.sweep_id, LOCK_NAME))
        else:
            self._claim(ResultStore(self.storage))
        return self

    def check(self) -> None:
        """SweepLockError if another driver holds the lock now; takes nothing and writes nothing, so a driver
        can refuse before it starts Ray or writes (`__enter__` still decides)."""
        local = _local_path(self.storage)
        if local is None:
            try:
                owner = ResultStore(self.storage).read_json(self.relpath)
            except StoreError:
                return
            if owner and is_alive(owner) is not False and owner.get("token") != self._me["token"]:
                raise self._held(owner, Storage(self.storage).uri_for(self.relpath), claim=True)
            return
        path = os.path.join(local, "sweeps", self.sweep_id, LOCK_NAME)
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return  # no lock file: nobody holds it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise self._held(_read_owner(fd), path) from None
        finally:
            os.close(fd)  # closing drops the probe's own flock

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            # a driver that ends leaves no holder behind to "take over" from
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock; the file stays (unlinking it would race a next holder)
            self._fd = None
        elif self._store is not None:
            self._store.delete(self.relpath)

    def _flock(self, path: str) -> None:
        made = _missing_dirs(os.path.dirname(path))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            _remove_dirs(made)
            raise self._unwritable(path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = _read_owner(fd)
            os.close(fd)
            raise self._held(owner, path) from None
        self.previous = _read_owner(fd) or None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(self._me).encode(), 0)
        except OSError as error:  # a full disk: leave no empty lock behind, nor a sweep directory it made
            os.close(fd)
            if made:
                os.remove(path)
            _remove_dirs(made)
            raise self._unwritable(path, error) from None
        self._fd = fd

    def _unwritable(self, path: str, error: OSError) -> StoreError:
        return StoreError(
            f"storage {self.storage!r}: cannot take the sweep's lock {path}: {write_failure(error)}"
        )

    def _claim(self, store: ResultStore) -> None:
        try:
            owner = store.read_json(self.relpath)
        except StoreError:
            owner = None  # no claim, or an unreadable one: nobody can be shown to hold it
        if owner and is_alive(owner) is not False:
            raise self._held(owner, Storage(self.storage).uri_for(self.relpath), claim=True)
        self.previous = owner
        store.write_json(self.relpath, self._me)
        # another driver claimed it meanwhile
        if store.read_json(self.relpath).get("token") != self._me["token"]:
            raise self._held(
                store.read_json(self.relpath), Storage(self.storage).uri_for(self.relpath), claim=True
            )
        self._store = store

    def _held(self, owner: dict, where: str, *, claim: bool = False) -> SweepLockError:
        """The error for a lock held by `owner`; a claim (object store) by a driver on another host may be
        stale, and only a person can tell."""
        fix = (
            f"if that driver is gone, delete {where}"
            if claim and not is_alive(owner)
            else "wait for it to finish or stop it"
        )
        return SweepLockError(
            f"sweep {self.sweep_id!r} in {self.storage!r} is being run by another driver, "
            f"{describe(owner)}: {fix}; one driver per sweep at a time"
        )


def _missing_dirs(directory: str) -> list[str]:
    """The directories `os.makedirs(directory)` would create, deepest first."""
    missing = []
    while directory and not os.path.exists(directory):
        missing.append(directory)
        directory = os.path.dirname(directory)
    return missing


def _remove_dirs(directories: list[str]) -> None:
    for directory in directories:  # deepest first; only those still empty
        try:
            os.rmdir(directory)
        except OSError:
            return


def _read_owner(fd: int) -> dict:
    try:
        data = os.pread(fd, 4096, 0)
        return json.loads(data) if data else {}
    except (OSError, ValueError):
        return {}


def _local_path(storage: str) -> str | None:
    """The directory of a local store (a path or file://), None for any other URI."""
    if "://" not in storage:
        return os.path.abspath(os.path.expanduser(storage))
    return storage.removeprefix("file://") if storage.startswith("file://") else None
