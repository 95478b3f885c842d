"""Checks that run once on every node of a Ray cluster before a sweep starts there.

`check_nodes` is what a sweep on a cluster runs before anything is stored: every node must write the results
store (`storage_check`) and read the corpus as the driver reads it (`data_check`). `on_every_node` runs one
small task per alive node, pinned to it, and collects every answer within one deadline, so that no failed
task is left for Ray to print about after the check's own error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from powersweep.sweeps.interrupt import ray_starting

PROBE_TIMEOUT_S = 300.0  # a node may first have to unpack the job's working directory


@dataclass(frozen=True)
class NodeFailure:
    node: str  # the node's label: address and node id
    why: str  # one line
    ran: bool  # the task ran there and answered (else the node or its worker failed to run it)


def alive_nodes(address: str | None = None) -> dict[str, str]:
    """node id -> label ("address (node id abc...)") of the cluster's alive nodes; connects to `address`
    first unless Ray is already initialised (inside a Ray job use "auto")."""
    import ray

    if not ray.is_initialized():
        with ray_starting():  # a driver's SIGTERM stays its own (sweeps/interrupt.py)
            ray.init(address=address, configure_logging=False, log_to_driver=False)
    return {node["NodeID"]: _label(node) for node in ray.nodes() if node["Alive"]}


def _label(node: dict) -> str:
    return f"{node['NodeManagerAddress']} (node id {node['NodeID'][:12]})"


def on_every_node(
    task: Callable[..., object], nodes: dict[str, str], args: Callable[[str], tuple], *, timeout_s: float
) -> tuple[dict[str, object], list[NodeFailure]]:
    """Run `task(*args(node_id))` on each node of `nodes` (0 CPUs: it runs on a busy or CPU-less head too);
    returns each node's answer, and the nodes where it did not run or raised, the task's own failures
    first."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    remote = ray.remote(num_cpus=0, max_retries=0)(task)
    refs = {
        node_id: remote.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False)
        ).remote(*args(node_id))
        for node_id in nodes
    }
    deadline, answers, failures = time.monotonic() + timeout_s, {}, []
    for node_id, ref in refs.items():
        try:
            answers[node_id] = ray.get(ref, timeout=max(deadline - time.monotonic(), 0.0))
        except ray.exceptions.GetTimeoutError:
            why = f"no check ran there within {timeout_s:g} s (see the node's runtime_env logs)"
            failures.append(NodeFailure(nodes[node_id], why, ran=False))
        except ray.exceptions.RayError as err:  # the node or its worker died, say
            failures.append(NodeFailure(nodes[node_id], str(err).strip().splitlines()[-1], ran=False))
    return answers, failures


def check_nodes(storage: str, data, *, address: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Every alive node of the cluster at `address` writes the store at `storage` and reads the corpus of
    `data` (a DataConfig) as this process does; raises ClusterError naming the node otherwise. Returns the
    number of nodes checked."""
    from powersweep.cluster.data_check import check_data_on_nodes
    from powersweep.cluster.storage_check import check_shared_storage

    nodes = check_shared_storage(storage, address=address, timeout_s=timeout_s)
    check_data_on_nodes(data, address=address, timeout_s=timeout_s)
    return nodes
