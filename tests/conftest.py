import os

import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray for one test module ("local": never a cluster a `ray start` left on the machine)."""
    import ray

    from sweeps.loopback import loopback_only

    with loopback_only():  # as a sweep's own local Ray: nothing outside this machine can reach it
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(autouse=True, scope="session")
def compile_cache(tmp_path_factory):
    """Code the tests compile is cached in a temporary directory, not the user's (proxy_models/compile_cache.py)."""
    os.environ["POWERSWEEP_COMPILE_CACHE"] = str(tmp_path_factory.mktemp("compile-cache"))
