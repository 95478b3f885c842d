"""Multi-node Ray: submit sweeps as Ray jobs, check that every node sees the results store and the corpus.

Launch configurations (Ray cluster launcher, KubeRay, SLURM) live next to this package; see cluster/README.md.
"""

if __name__ != "powersweep.cluster":  # a checkout's folder imported by its bare name: a second copy
    raise ImportError(f"import this package as powersweep.cluster, not {__name__}")

import importlib

# public name -> module defining it: imported on first use, so importing one submodule (e.g. for
# `powersweep --help`) does not import torch, Ray or pandas through this package.
_EXPORTS = {
    "ClusterError": "powersweep.cluster.jobs",
    "auth_token": "powersweep.cluster.jobs",
    "is_jobs_address": "powersweep.cluster.jobs",
    "job_logs": "powersweep.cluster.jobs",
    "job_status": "powersweep.cluster.jobs",
    "stop_job": "powersweep.cluster.jobs",
    "submit_job": "powersweep.cluster.jobs",
    "check_shared_storage": "powersweep.cluster.storage_check",
    "check_data_on_nodes": "powersweep.cluster.data_check",
    "check_nodes": "powersweep.cluster.nodes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
