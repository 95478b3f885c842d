"""Re-render a report while a sweep writes its results:
poll the results' file list, re-render when it changed.

>>> state = WatchState("runs/cpu-quick", render=lambda: write_report(load_table("runs/cpu-quick"), "out"))
>>> render_if_changed(state)   # True: first call renders
>>> render_if_changed(state)   # False until a file under runs/cpu-quick is added, removed or rewritten
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Signature = tuple[tuple[str, int, int], ...]  # (relative path, mtime in ns, size in bytes) per file


@dataclass
class WatchState:
    """What is watched, how to render, and what the last render saw."""

    path: Path | str  # the results table: a file or a directory of them
    render: Callable[[], object]  # writes the page; its errors propagate to the caller
    seen: Signature | None = None  # None: nothing rendered yet
    renders: int = 0


def signature(path: Path | str) -> Signature:
    """Every file under ``path`` (or ``path`` itself) with its mtime and size; empty when it does not exist.

    Hidden files and temporaries (names starting with '.' or ending in '.tmp') are left out: a writer's
    half-written file is not a change until it is renamed into place.
    """
    root = Path(path)
    if root.is_file():
        stat = root.stat()
        return ((root.name, stat.st_mtime_ns, stat.st_size),)
    entries = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in files:
            if name.startswith(".") or name.endswith(".tmp"):
                continue
            full = Path(folder, name)
            try:
                stat = full.stat()
            except FileNotFoundError:  # removed between the listing and the stat: the next poll sees it
                continue
            entries.append((str(full.relative_to(root)), stat.st_mtime_ns, stat.st_size))
    return tuple(sorted(entries))


def render_if_changed(state: WatchState) -> bool:
    """Render when the files differ from the last render's (always the first time); True when it rendered.

    The signature is recorded before rendering, so a render that fails is not retried until the files change.
    """
    current = signature(state.path)
    if current == state.seen:
        return False
    state.seen = current
    state.render()
    state.renders += 1
    return True


def watch(
    state: WatchState,
    *,
    interval_s: float = 5.0,
    sleep: Callable[[float], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
    errors: tuple[type[Exception], ...] = (),
) -> None:
    """Poll every ``interval_s`` seconds until interrupted (Ctrl-C raises KeyboardInterrupt to the caller).

    Exceptions of the types in ``errors`` (e.g. a table with too few runs yet) go to ``on_error`` and the
    watch goes on; any other exception ends it.
    """
    while True:
        try:
            render_if_changed(state)
        except errors as error:
            if on_error is not None:
                on_error(error)
        (sleep or time.sleep)(interval_s)
