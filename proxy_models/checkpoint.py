"""Checkpoint files written in the background, so that training goes on while a state is written.

`save(state, path)` copies the state to host memory, the only part the caller waits for, then writes it
atomically (a temp file, then a rename) on a thread of its own. A packed trunk of 16 paper-12m variants is
2.4 GB of weights and Adam moments: written in the caller's thread it would stop training for seconds at every
fork. A path has at most one write in flight: `save`, `load`, `exists` and `wait` of a path first wait for
this process's write of it, so a reader sees the last state saved, and a write's error is raised there.
A process killed while writing leaves the previous file, and a temp file beside it named after its host and
pid (`files.temp_path`); `files.remove_stale_temps` deletes those of this host's ended processes (a lineage's
next attempt calls it). A write that fails removes its own temp file.

The host copy of CUDA tensors is pinned memory, which the device copies into at full speed; torch's host
allocator caches it once the write has dropped it, so the next save reuses it rather than allocating again.
"""

from __future__ import annotations

import os
import threading
from typing import BinaryIO

import torch

from powersweep.proxy_models.files import write_atomically

# path -> its write in flight and its error
_writes: dict[str, tuple[threading.Thread, list[BaseException]]] = {}
_lock = threading.Lock()


def save(state: dict, path: str) -> None:
    """Write `state` (nested dicts, lists and tuples of tensors and plain values) to `path` in the background.
    Returns once the state is copied: the caller may change its tensors at once."""
    wait(path)  # first: one snapshot of a path in host memory at a time
    snapshot, key = _host_copy(state), os.path.abspath(path)
    errors: list[BaseException] = []
    thread = threading.Thread(target=_write, args=(snapshot, path, errors), name=f"checkpoint {path}")
    with _lock:
        _writes[key] = (thread, errors)
    thread.start()


def wait(path: str) -> None:
    """Return once this process's write of `path` (if any) is done; raise its error, if it failed."""
    with _lock:
        thread, errors = _writes.pop(os.path.abspath(path), (None, []))
    if thread is not None:
        thread.join()
    if errors:
        raise errors[0]


def exists(path: str) -> bool:
    """Whether a state is saved at `path`, once this process's write of it is done."""
    wait(path)
    return os.path.exists(path)


def load(path: str, *, map_location: torch.device | str) -> dict:
    """The state saved at `path`, once this process's write of it is done."""
    wait(path)
    return torch.load(path, map_location=map_location, weights_only=True)


def _write(state: dict, path: str, errors: list[BaseException]) -> None:
    try:
        write_atomically(path, lambda stream: _save(state, stream))
    except BaseException as error:  # raised to the caller by the next wait (save, load, exists) of `path`
        errors.append(error)


def _save(state: dict, stream: BinaryIO) -> None:
    """torch.save through a Python file, so that a full disk is the OSError (ENOSPC) a caller can name:
    torch's writer reports the failed write as a RuntimeError of its own, raised while the OSError is
    handled."""
    try:
        torch.save(state, stream)
    except RuntimeError as error:
        if isinstance(error.__context__, OSError):
            raise error.__context__ from None
        raise


def _host_copy(value):
    """`value` with every tensor copied to host memory (pinned for a CUDA tensor) and every container rebuilt:
    nothing shared with it."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda).copy_(value)  # blocking
    if isinstance(value, dict):
        return {key: _host_copy(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_host_copy(v) for v in value)
    return value
