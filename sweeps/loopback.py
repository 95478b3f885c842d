"""The local Ray a driver starts listens on the loopback interface only:
nothing outside this machine can reach it.

A local Ray is a one-node cluster, so no other machine needs its ports. Ray picks the address every one of its
servers binds to (GCS, raylet, object manager, the workers' and the driver's gRPC servers, the dashboard and
runtime-env agents) from the node's IP address, and on Linux that is the machine's outward address unless
Ray's single-machine mode is on: `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`, the setting Ray uses on Windows and
macOS, where the node's address is 127.0.0.1. Ray reads it in each of its processes when `ray` is imported
(`ray._private.ray_constants.ENABLE_RAY_CLUSTER`), so it goes into the environment the Ray processes inherit
and, for a driver that had imported `ray` before, into that constant while `ray.init` runs. Checked for
Ray 2.60 by tests/sweeps/test_loopback.py, which lists every listening socket of the processes of one local
Ray. A driver that joins an existing cluster (`--address`) is left as it is.

Example::

    with loopback_only():
        ray.init(address="local")
"""

from __future__ import annotations

import contextlib
import os

SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"  # "0": Ray's node address is 127.0.0.1
# how a socket on the loopback reports its address
LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


@contextlib.contextmanager
def loopback_only():
    """Around the `ray.init` that starts a local Ray: every server of that Ray listens on 127.0.0.1 only.

    The environment and Ray's constant are restored afterwards, so this process can still join a cluster
    later.
    """
    before = os.environ.get(SINGLE_MACHINE_ENV)
    os.environ[SINGLE_MACHINE_ENV] = "0"
    from ray._private import ray_constants  # after the variable is set: a first import reads it

    constant = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False  # read when ray.init resolves the node's address
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = constant
        if before is None:
            os.environ.pop(SINGLE_MACHINE_ENV, None)
        else:
            os.environ[SINGLE_MACHINE_ENV] = before
