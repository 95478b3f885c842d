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
