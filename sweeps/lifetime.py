"""The local Ray a driver starts ends with the driver, however the driver ends (kill -9 included).

Ray ties its GCS and raylet to the process that started them, but the agents the raylet starts (dashboard and
runtime-env agents) and idle workers can outlive a driver killed with SIGKILL. So before `ray.init` the driver
marks its environment (`POWERSWEEP_DRIVER`, inherited by every Ray worker) and after it starts a watchdog: a
small process in its own session that holds the read end of a pipe whose write end only the driver has. While
the driver lives the watchdog records the process trees of the processes `ray.init` started; when the pipe
reaches end of file (the driver has ended, whatever the cause) it kills every recorded process still running
and every marked one, by pid. Other children of the driver are left alone.

Example::

    with ray_of_this_driver():
        ray.init(address="local")
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time

import psutil

MARKER = "POWERSWEEP_DRIVER"
SCAN_S = 0.5  # how often the watchdog records the driver's process tree
CLEANUP_S = 15.0  # how long it keeps killing what is left (processes may still be starting)
_watchdogs: list[subprocess.Popen] = []  # held for the driver's lifetime: their pipes close when it ends


def driver_marker() -> str:
    """This process as a marker value: its pid and start time (pids are reused)."""
    return f"{os.getpid()}:{psutil.Process().create_time():.3f}"


def mark_environment() -> str:
    """Mark this process's environment, so the processes Ray starts from here inherit the marker."""
    os.environ[MARKER] = driver_marker()
    return os.environ[MARKER]


@contextlib.contextmanager
def ray_of_this_driver():
    """Around the `ray.init` that starts a local Ray: its processes end when this process does."""
    before = {p.pid for p in _tree(os.getpid())}
    marker = mark_environment()
    yield
    start_watchdog(marker, [p.pid for p in _tree(os.getpid()) if p.pid not in before])


def start_watchdog(marker: str, roots: list[int]) -> subprocess.Popen:
    """Start the watchdog of the processes `roots` (and their descendants, and the marked ones); it ends when
    it has cleaned up after this process."""
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "powersweep.sweeps.lifetime", marker, *map(str, roots)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={k: v for k, v in os.environ.items() if k != MARKER},
    )
    _watchdogs.append(watchdog)
    return watchdog


def marked(marker: str) -> list[psutil.Process]:
    """Live processes whose environment carries `marker`."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.pid != os.getpid() and process.environ().get(MARKER) == marker:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def watch(marker: str, roots: list[int]) -> None:
    """The watchdog's loop: record the roots' trees until stdin closes, then kill what is left."""
    known: dict[int, psutil.Process] = {}
    while not _closed(sys.stdin.fileno(), SCAN_S):
        for root in roots:
            known.update((p.pid, p) for p in _tree(root, itself=True))
    deadline = time.monotonic() + CLEANUP_S
    while time.monotonic() < deadline:
        victims = [p for p in known.values() if _running(p)] + marked(marker)
        if not victims:
            return
        for process in victims:
            try:
                process.kill()  # psutil checks pid and start time: never a reused pid
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        psutil.wait_procs(victims, timeout=1.0)


def _closed(fd: int, timeout_s: float) -> bool:
    readable, _, _ = select.select([fd], [], [], timeout_s)
    return bool(readable) and not os.read(fd, 4096)


def _tree(pid: int, *, itself: bool = False) -> list[psutil.Process]:
    try:
        process = psutil.Process(pid)
        return [process] * itself + process.children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _running(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


if __name__ == "__main__":
    watch(sys.argv[1], [int(pid) for pid in sys.argv[2:]])
