"""Files read side by side: results in the items' order, never more threads than asked, and a store reads
local files in as many threads as it has cores, remote ones in more (their reads wait on the network)."""

import threading

import pytest

from powersweep.file_threads import LOCAL_THREADS, REMOTE_THREADS, map_threads
from powersweep.sweeps.store import ResultStore


@pytest.mark.parametrize("threads", [1, 2, 5])
def test_results_keep_the_items_order_in_at_most_the_threads_asked(threads):
    seen, barrier = set(), threading.Barrier(min(threads, 2))

    def work(item: int) -> int:
        seen.add(threading.get_ident())
        if threads > 1 and item < 2:
            barrier.wait(timeout=30)  # the first two items run at once: a second thread is used
        return item * item

    assert map_threads(work, list(range(40)), threads=threads) == [i * i for i in range(40)]
    assert 1 <= len(seen) <= threads and (threads == 1) == (seen == {threading.get_ident()})


def test_a_store_reads_local_files_in_its_cores_threads_and_remote_ones_in_more(tmp_path):
    assert ResultStore(str(tmp_path / "store"))._threads == LOCAL_THREADS >= 1
    assert ResultStore("memory://bucket/store")._threads == REMOTE_THREADS == 32
