"""Check, before a sweep starts on a cluster, that every node can write its results store.

One tiny Ray task per alive node writes a probe file through the store's own filesystem and reads it back;
the driver then reads every node's probe, so a store that each node writes to its own local disk (not
shared) fails here, with one line naming the URI and the node, instead of losing rows mid-sweep.
"""

from __future__ import annotations

from powersweep.cluster.jobs import ClusterError
from powersweep.cluster.nodes import PROBE_TIMEOUT_S, NodeFailure, alive_nodes, on_every_node
from powersweep.sweeps.storage import write_failure
from powersweep.sweeps.store import ResultStore, StoreError

PROBE_DIR = "cluster-probes"  # under the store's root; probes are deleted after the check
SHARED_FIX = "use a filesystem every node mounts at the same path, or an object store (s3://, gs://)"


def check_shared_storage(uri: str, *, address: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Probe `uri` from every alive node of the Ray cluster; returns the number of nodes checked.

    Connects to `address` first unless Ray is already initialised (inside a Ray job use "auto").
    Raises ClusterError naming the URI and the node when a node cannot write there or the
    driver cannot read back what a node wrote.
    """
    nodes = alive_nodes(address)
    store = ResultStore(uri)
    try:
        _probe_every_node(uri, nodes, timeout_s)
        _read_back(store, nodes)
    finally:
        for node_id in nodes:
            store.delete(_probe_path(node_id))
    return len(nodes)


def _probe_path(node_id: str) -> str:
    return f"{PROBE_DIR}/{node_id}.json"


def _probe_every_node(uri: str, nodes: dict[str, str], timeout_s: float) -> None:
    """Every node's probe, each one waited for; raises for the most telling failure (the store's own)."""
    answers, failures = on_every_node(
        _write_and_read, nodes, lambda node_id: (uri, _probe_path(node_id), node_id), timeout_s=timeout_s
    )
    failures += [NodeFailure(nodes[n], why, ran=True) for n, why in answers.items() if why]
    if failures:
        failure = min(failures, key=lambda f: not f.ran)  # the first of the store's own failures, if any
        fix = "" if failure.ran else f": {SHARED_FIX}"  # a probe's answer carries its fix
        raise ClusterError(f"storage {uri!r} is not writable from node {failure.node}: {failure.why}{fix}")


def _write_and_read(uri: str, relpath: str, node_id: str) -> str | None:
    """Runs on one node: None if the probe round-trips through the store, else why not and the fix (one
    line). A write the store refused says why in its own words, with its fix (sweeps/storage.py); the
    caller's line names the store and the node, and the probe's file is of no use to a person."""
    try:
        store = ResultStore(uri)
        store.write_json(relpath, {"node_id": node_id})
        if store.read_json(relpath) != {"node_id": node_id}:
            return f"the probe read back differs from what was written: {SHARED_FIX}"
    except (OSError, StoreError, ValueError) as err:
        if isinstance(err, StoreError) and isinstance(err.__cause__, OSError):  # the store refused the write
            return write_failure(err.__cause__)
        text = str(err).strip().removeprefix(f"storage URI {uri!r}: ")  # the caller's line names the store
        return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}: {SHARED_FIX}"
    return None


def _read_back(store: ResultStore, nodes: dict[str, str]) -> None:
    for node_id, label in nodes.items():
        try:
            seen = store.read_json(_probe_path(node_id))
        except StoreError:
            seen = None
        if seen != {"node_id": node_id}:
            raise ClusterError(
                f"storage {store.uri!r}: node {label} wrote a probe there, but the driver "
                f"cannot read it (each node sees its own disk): {SHARED_FIX}"
            )
