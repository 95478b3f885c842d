import pytest


@pytest.fixture(scope="module")
def local_ray():
    """A fresh local Ray for one test module ("local": never a cluster a `ray start` left on the machine)."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()
