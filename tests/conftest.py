import os

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray for one test module ("local": never a cluster a `ray start` left on the machine)."""
    import ray

    from powersweep.sweeps.loopback import loopback_only

    with loopback_only():  # as a sweep's own local Ray: nothing outside this machine can reach it
        ray.init(
            address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False
        )
    yield
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def compile_cache(tmp_path_factory):
    """Code the tests compile is cached in a temporary directory, not the user's
    (proxy_models/compile_cache.py)."""
    os.environ["POWERSWEEP_COMPILE_CACHE"] = str(tmp_path_factory.mktemp("compile-cache"))


@pytest.fixture
def small_disk(tmp_path):
    """A filesystem of a given size for the test: `small_disk("256k")` mounts a tmpfs and returns its path (a
    full disk made for real, as root on Linux); the test is skipped where mounting is not allowed."""
    import subprocess

    mounted = []

    def mount(size: str):
        path = tmp_path / f"disk-{len(mounted)}"
        path.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small filesystem here: {done.stderr.decode().strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 server (moto's, on 127.0.0.1) for the whole session, counting its requests
    (tests/s3_server.py). Each test takes a bucket of its own, e.g. ``ResultStore(s3_server.bucket())``."""
    from s3_server import S3Server  # moto loads Flask: only for the sessions that use it

    with S3Server() as server:
        yield server


@pytest.fixture(autouse=True)
def no_ray_address(monkeypatch):
    """Commands take RAY_ADDRESS as their default cluster: a test runs on the Ray it starts, whatever the
    caller's environment names (a test that means a cluster sets it itself)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
