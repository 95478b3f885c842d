"""Checkpoint files written in the background, so that training goes on while a state is written.

`save(state, path)` copies the state to host memory, the only part the caller waits for, then writes it
atomically (a temp file, then a rename) on a thread of its own. A packed trunk of 16 paper-12m variants is
2.4 GB of weights and Adam moments: written in the caller's thread it would stop training for seconds at every
fork. A path has at most one write in flight: `save`, `load`, `exists` and `wait` of a path first wait for
this process's write of it, so a reader sees the last state saved, and a write's error is raised there.
A process killed while writing leaves the previous file (and a temp file beside it).

The host copy of a path's state is kept for its next save, which copies into it (pinned memory for CUDA
tensors, which the device copies into at full speed, and no new allocation to fault in); `finish(path)`
waits for the last write and frees it.
"""

from __future__ import annotations

import os
import threading

import torch

_writes: dict[str, tuple[threading.Thread, list[BaseException]]] = {}  # path -> its write in flight and its error
_snapshots: dict[str, object] = {}  # path -> the host copy of its last state, reused by its next save
_lock = threading.Lock()


def save(state: dict, path: str) -> None:
    """Write `state` (nested dicts, lists and tuples of tensors and plain values) to `path` in the background.
    Returns once the state is copied: the caller may change its tensors at once."""
    wait(path)  # first: the host copy of the last save is free once its write is done
    key = os.path.abspath(path)
    snapshot = _snapshots[key] = _host_copy(state, into=_snapshots.get(key))
    errors: list[BaseException] = []
    thread = threading.Thread(target=_write, args=(snapshot, path, errors), name=f"checkpoint {path}")
    with _lock:
        _writes[key] = (thread, errors)
    thread.start()


def finish(path: str) -> None:
    """`wait(path)`, then free the host copy kept for the path's next save (a lineage's last save is done)."""
    wait(path)
    _snapshots.pop(os.path.abspath(path), None)


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
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException as error:  # raised to the caller by the next wait (save, load, exists) of `path`
        errors.append(error)


def _host_copy(value, *, into=None):
    """`value` with every tensor copied to host memory and every container rebuilt: nothing shared with it.
    A tensor is copied into its counterpart in `into` (an earlier copy of the same structure) where shape and
    dtype match, else into a new one (pinned when the tensor is on CUDA)."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        if not (isinstance(into, torch.Tensor) and into.shape == value.shape and into.dtype == value.dtype):
            into = torch.empty(value.shape, dtype=value.dtype, pin_memory=value.is_cuda)
        return into.copy_(value)  # a blocking copy: the writer thread reads it next
    if isinstance(value, dict):
        into = into if isinstance(into, dict) else {}
        return {key: _host_copy(v, into=into.get(key)) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        into = into if isinstance(into, (list, tuple)) and len(into) == len(value) else [None] * len(value)
        return type(value)(_host_copy(v, into=i) for v, i in zip(value, into))
    return value
