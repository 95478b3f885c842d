"""Reading many files side by side: a store as a running sweep leaves it is thousands of small files.

A file on an object store is read in a request that waits on the network, so 32 threads read them at once
(`REMOTE_THREADS`). A local file's read is decoding, bound by the CPU: pyarrow decodes without the GIL but
the rest of a read holds it, so more threads than cores only take turns (`LOCAL_THREADS`, the default). On 2
cores and a store of 8,351 local files (benchmarks/RESULTS.md, "Reading local files in threads"): its rows
read in 4.9 s with 2 threads, 7.6 s with 32; `analyze --no-figures` 17.4 s with 2, 19.2 s with 32, 21.4 s
with 1. Standard library only: every layer may use it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")
REMOTE_THREADS = 32
LOCAL_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def map_threads(function: Callable[[U], T], items: Sequence[U], *, threads: int = LOCAL_THREADS) -> list[T]:
    """``function`` over ``items`` in up to ``threads`` threads, the results in the items' order."""
    if len(items) < 2 or threads < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(function, items))
