"""The multi-node tests' cluster (tests/local_cluster.py)."""

import pytest
from local_cluster import running_cluster


@pytest.fixture
def local_cluster():
    """A started head (no CPUs: trials land on the workers); the test adds workers."""
    with running_cluster(head_cpus=0) as cluster:
        yield cluster
