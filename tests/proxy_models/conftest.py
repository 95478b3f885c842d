import pytest

from powersweep.proxy_models.data import DataConfig, load_corpus


@pytest.fixture(scope="session")
def corpus():
    """The embedded corpus (built once, then cached on disk)."""
    return load_corpus(DataConfig())


@pytest.fixture
def traced():
    """`traced(fn, *args)`: what dynamo puts in the forward graph of fn(*args), as (the names of the functions
    it calls, the subgraphs it holds). Forward only, no_grad: backward needs a real backend for reused
    regions. Static shapes, as compile_cache.compile_function compiles, and nothing kept from what earlier
    tests compiled in this process (a frame seen before at other shapes would be traced dynamic)."""
    import torch

    def trace(fn, *args) -> tuple[list[str], set[str]]:
        nodes = []

        def record(graph, example_inputs):
            nodes.extend(graph.graph.nodes)
            return graph.forward

        torch._dynamo.reset()
        with torch.no_grad():
            torch.compile(fn, backend=record, dynamic=False)(*args)
        calls = [getattr(n.target, "__name__", str(n.target)) for n in nodes if n.op == "call_function"]
        return calls, {n.target for n in nodes if n.op == "get_attr"}

    return trace
