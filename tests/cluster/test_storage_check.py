"""The storage check on a real (one-node, local) Ray:
it writes from a worker process, reads from the driver."""

from __future__ import annotations

import os

import pytest

from powersweep.cluster.jobs import ClusterError
from powersweep.cluster.storage_check import PROBE_DIR, check_shared_storage
from powersweep.sweeps.outcome import MAX_LINE, error_line


def test_a_store_every_node_sees_passes_and_leaves_no_probe(local_ray, tmp_path):
    assert check_shared_storage(str(tmp_path / "store")) == 1
    assert os.listdir(tmp_path / "store" / PROBE_DIR) == []


def test_a_store_a_node_cannot_write_names_the_uri_the_node_the_reason_and_the_fix(local_ray, tmp_path):
    (tmp_path / "file").write_text("a file where the store's directory should be")
    uri = str(tmp_path / "file" / "store")
    with pytest.raises(
        ClusterError, match=f"storage '{uri}' is not writable from node \\S+ \\(node id \\w+\\): "
    ) as raised:
        check_shared_storage(uri)
    message = str(raised.value)
    assert message.endswith(
        ": NotADirectoryError [errno 20] Not a directory: make the store writable for this user, "
        "or give another --storage"
    )
    assert PROBE_DIR not in message  # the probe's file is of no use to a person
    # the line a person gets (outcome.error_line) leaves the store's path 80 characters before it is cut
    assert len(error_line("powersweep submit", raised.value)) - len(uri) <= MAX_LINE - 80


def test_a_store_private_to_each_process_is_not_shared(local_ray):
    # memory:// lives in each process: the worker's probe is invisible to the driver, as a node-local disk is.
    unseen = "node \\S+ \\(node id \\w+\\) wrote a probe there, but the driver cannot read it"
    with pytest.raises(ClusterError, match=unseen):
        check_shared_storage("memory://psprobe/store")


def test_every_probe_is_waited_for_and_the_stores_own_failure_is_named(local_ray, tmp_path, monkeypatch):
    # A node that dies mid-check fails its probe too; the check still collects every probe (none left for Ray
    # to report after the check's error) and names the store's own failure rather than the dead node.
    import ray

    from powersweep.cluster import storage_check

    asked = []

    def get(ref, timeout=None):
        asked.append(timeout)
        if len(asked) == 1:
            raise ray.exceptions.WorkerCrashedError()
        return "NotADirectoryError: [Errno 20] Not a directory"

    nodes = {"a": "10.0.0.1 (node id a)", "b": "10.0.0.2 (node id b)"}  # two nodes' probes, both run here
    monkeypatch.setattr(
        "ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy", lambda *a, **k: "DEFAULT"
    )
    monkeypatch.setattr(ray, "get", get)
    with pytest.raises(ClusterError, match=r"from node 10\.0\.0\.2 \(node id b\): NotADirectoryError"):
        storage_check._probe_every_node(str(tmp_path / "store"), nodes, timeout_s=30.0)
    assert len(asked) == 2 and all(0 <= t <= 30.0 for t in asked)  # one deadline for all
