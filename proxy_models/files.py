"""Files written whole or not at all: a temp file beside the target, then a rename over it.

`write_atomically(path, write)` hands `write` a binary stream on `temp_path(path)`, `<path>.tmp-<host>-<pid>`
(unique to the writer on a file system that several hosts share), then renames it over `path`: a reader, or
a process killed mid-write, sees the old file or the new one, never part of one. A write that fails (a full
disk) removes its temp file; `remove_stale_temps` deletes those that killed processes of this host left.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import socket
from collections.abc import Callable, Iterator
from typing import BinaryIO

import psutil


def write_atomically(path: str, write: Callable[[BinaryIO], object]) -> None:
    """`write(stream)` the whole file to `temp_path(path)`, then rename it over `path`."""
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as stream:
            write(stream)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def temp_path(path: str) -> str:
    """The temp file this process writes `path` through."""
    return f"{path}.tmp-{socket.gethostname()}-{os.getpid()}"


def remove_stale_temps(directory: str) -> list[str]:
    """Delete the temp files (`temp_path`) in `directory` left by processes of this host that have ended, as a
    process killed while writing leaves them; returns their paths. A live writer's, another host's (it cannot
    be told from here) and any other file stay."""
    prefix = f".tmp-{socket.gethostname()}-"
    removed = []
    for tmp in glob.glob(os.path.join(glob.escape(directory), f"*{glob.escape(prefix)}*")):
        pid = tmp.rpartition(prefix)[2]
        if pid.isdigit() and not _running(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
                removed.append(tmp)
    return removed


def _running(pid: int) -> bool:
    """Whether a process `pid` runs on this host (a pid reused since counts: the file then stays); one killed
    but not yet reaped has ended."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # another user's process
        return True


@contextlib.contextmanager
def machine_lock(path: str) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (made if missing) for the block: the processes of one machine
    that make the same cached thing take turns, so that one makes it and the others find it made. Released
    when the block ends, or the process does."""
    with open(path, "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield
