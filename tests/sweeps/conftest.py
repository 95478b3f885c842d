import pytest


@pytest.fixture(scope="session")
def local_ray():
    """A fresh local Ray for the tests of this package (never a cluster left running on the machine)."""
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False, log_to_driver=False)
    yield
    ray.shutdown()
