"""Multi-node Ray: submit sweeps as Ray jobs, check that every node sees the results store.

Launch configurations (Ray cluster launcher, KubeRay, SLURM) live next to this package; see cluster/README.md.
"""

from cluster.jobs import ClusterError, auth_token, is_jobs_address, job_logs, job_status, stop_job, submit_job
from cluster.storage_check import check_shared_storage

__all__ = [
    "ClusterError", "auth_token", "check_shared_storage", "is_jobs_address", "job_logs", "job_status", "stop_job",
    "submit_job",
]
