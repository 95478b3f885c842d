import pytest

from proxy_models.data import DataConfig, load_corpus


@pytest.fixture(scope="session")
def corpus():
    """The embedded corpus (built once, then cached on disk)."""
    return load_corpus(DataConfig())
