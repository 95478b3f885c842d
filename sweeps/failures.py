"""Errors in trials, classified once: those that would happen again on a retry end the sweep, the rest retry.

Deterministic: the user's mistakes the libraries name (bad data, bad config, a store that refuses a write),
a filesystem that is full, read-only or not ours to write, and a host out of memory. A trial that meets one
reports it to Tune instead of raising, so Tune does not retry it; `FatalStop` then stops every trial and the
driver raises `SweepFailure`: one line with the cause and its fix, and the trial's traceback in a log file
the line names. Transient faults (a worker or node lost, a process killed) raise as before and Tune retries
them from the lineage's checkpoint (`run.max_retries`).

>>> stop = FatalStop()                    # Tune's `stop=`; a trial body wrapped by `reporting_fatal`
>>> raise_fatal(stop, log_dirs=[...])    # after Tuner.fit(): SweepFailure if a trial met one
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import os
import tempfile
import traceback
from collections.abc import Callable, Sequence

from powersweep.sweeps.outcome import MAX_LINE, is_user_error, one_line
from powersweep.sweeps.storage import write_failure

FATAL = "fatal"  # the key of a trial's last report when it met a deterministic error
TRACEBACK = "fatal_traceback"
FILE = "fatal_file"  # the file a refused write was for ("" if none)
# A filesystem that refuses a write for these reasons refuses it again on a retry.
DETERMINISTIC_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})
_HOST_OOM = "can't allocate memory"  # torch's CPU allocator's words (DefaultCPUAllocator)


class SweepFailure(RuntimeError):
    """A trial met an error that every retry would meet again; the sweep stopped. One line: cause and fix,
    ending with `log_path`, the file that holds the trial's traceback."""

    def __init__(self, line: str, log_path: str):
        super().__init__(line)
        self.log_path = log_path

    def __reduce__(self):
        return SweepFailure, (str(self), self.log_path)


def fatal_reason(error: BaseException) -> str | None:
    """One line naming a deterministic error and its fix, or None for an error worth retrying."""
    if is_user_error(error):
        return one_line(error)
    if isinstance(error, OSError) and error.errno in DETERMINISTIC_ERRNOS:
        return one_line(f"cannot write: {write_failure(error)}")  # the file: FILE, shown where there is room
    if isinstance(error, MemoryError) or (isinstance(error, RuntimeError) and _HOST_OOM in str(error)):
        return (
            "the trial ran out of host memory: lower run.max_concurrent (fewer trials at once), or train a "
            "smaller model or batch_size"
        )
    return None


def reporting_fatal(trainable: Callable[[dict], None]) -> Callable[[dict], None]:
    """`trainable` (a Tune function trainable) that reports a deterministic error as its last result (FATAL
    and its traceback) and returns, instead of raising it to be retried."""

    @functools.wraps(trainable)
    def guarded(params: dict) -> None:
        try:
            trainable(params)
        except Exception as error:
            reason = fatal_reason(error)
            if reason is None:
                raise
            from ray import tune

            file = getattr(error, "filename", None) or ""
            tune.report({FATAL: reason, FILE: str(file), TRACEBACK: traceback.format_exc()})

    return guarded


def fatal_stop():
    """A Tune Stopper that ends the whole experiment at the first trial reporting FATAL (kept as `.fatal`)."""
    from ray import tune

    class FatalStop(tune.Stopper):
        def __init__(self):
            self.fatal: dict | None = None

        def __call__(self, trial_id: str, result: dict) -> bool:
            if FATAL in result and self.fatal is None:
                self.fatal = {**result, "trial_id": trial_id}
            return FATAL in result

        def stop_all(self) -> bool:
            return self.fatal is not None

    return FatalStop()


def raise_fatal(stop, *, log_dirs: Sequence[str]) -> None:
    """After a Tuner's fit: SweepFailure naming the first deterministic error a trial reported (if any), with
    its traceback written to a log file in the first of `log_dirs` that takes it.

    The line holds, by priority: the cause and its fix, the log's path (never cut, however deep the store),
    and the file a refused write was for where there is room (the traceback names it too)."""
    if stop.fatal is None:
        return
    log = write_log(stop.fatal[TRACEBACK], log_dirs=log_dirs)
    then = f" [not retried; resume once fixed; traceback: {log}]"
    room = MAX_LINE - 30 - (len(then) - len(log))  # 30: the command's prefix, "powersweep submit: error: "
    cause = one_line(stop.fatal[FATAL], limit=room, head=min(room // 4, 40))  # its end: the reason, the fix
    file = stop.fatal.get(FILE) or ""
    where = f" (writing {file})"
    if file and len(cause) + len(where) <= room:
        cause += where
    raise SweepFailure(cause + then, log)


def write_log(text: str, *, log_dirs: Sequence[str]) -> str:
    """Write `text` to a new file in the first of `log_dirs`
    (then the temp dir) that can take it; its path."""
    name = f"trial-error-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%fZ}.log"
    for directory in [*log_dirs, os.path.join(tempfile.gettempdir(), "powersweep-logs")]:
        path = os.path.join(directory, name)
        try:
            os.makedirs(directory, exist_ok=True)
            with open(path, "w") as handle:
                handle.write(text)
            return path
        except OSError:  # a full or read-only disk: the next place
            with contextlib.suppress(OSError):
                os.remove(path)
    return "(not written: no writable log directory)"
