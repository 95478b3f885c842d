"""Check, before a sweep starts on a cluster, that every node reads the corpus the driver reads.

One task per alive node describes the sweep's data source as that node sees it (`data.corpus_identity`: the
corpus's fingerprint, or a text dataset's files' hash) and the driver compares each with its own. A source
that exists only on the driver's machine, a node without the object store's credentials, or a node whose copy
of the shards differs fails here, with one line naming the source and the node, instead of inside every trial
placed there (or, worse, training some runs of the sweep on other data).
"""

from __future__ import annotations

from powersweep.cluster.jobs import ClusterError
from powersweep.cluster.nodes import PROBE_TIMEOUT_S, NodeFailure, alive_nodes, on_every_node
from powersweep.proxy_models.filesystems import shown

READABLE_FIX = (
    "put the corpus at a path every node mounts, or in an object store (s3://, gs://) every node can read"
)


def check_data_on_nodes(data, *, address: str | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """Every alive node of the Ray cluster reads `data` (a DataConfig) as the same corpus as this process;
    returns the number of nodes checked. Raises ClusterError naming the source and the node otherwise."""
    from powersweep.proxy_models.data import corpus_identity

    expected = corpus_identity(data)
    nodes = alive_nodes(address)
    answers, failures = on_every_node(_identity_here, nodes, lambda _: (data,), timeout_s=timeout_s)
    source = _source(data)
    for node_id, (identity, why) in answers.items():
        if why:
            failures.append(NodeFailure(nodes[node_id], why, ran=True))
        elif identity != expected:
            raise ClusterError(
                f"train.data.source {source} reads as other data on node {nodes[node_id]} than where the "
                "sweep was started: give every node the same files (a sweep's rows share one corpus)"
            )
    if failures:
        failure = min(failures, key=lambda f: not f.ran)  # a node's own failure to read it, if any
        raise ClusterError(
            f"train.data.source {source} is not readable from node {failure.node}: {failure.why}: "
            + READABLE_FIX
        )
    return len(nodes)


def _identity_here(data) -> tuple[str | None, str | None]:
    """Runs on one node: (the corpus's identity, None), or (None, why it cannot be read: one line)."""
    from powersweep.proxy_models.data import DataError, corpus_identity

    try:
        return corpus_identity(data), None
    except (DataError, OSError, ValueError) as err:
        text = str(err).strip()
        return None, f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def _source(data) -> str:
    source = data.source
    return repr(shown(source)) if isinstance(source, str) else repr([shown(s) for s in source])
