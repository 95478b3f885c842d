"""The loop calls its engine only through the operations `Engine` declares, and both engines provide them."""

import ast
import inspect
from pathlib import Path

import pytest

from powersweep.proxy_models import loop, micro_batching, result_rows
from powersweep.proxy_models.engine import Engine
from powersweep.proxy_models.packed import PackedEngine
from powersweep.proxy_models.trainer import SoloEngine

DECLARED = {name for name in {*vars(Engine), *Engine.__annotations__} if not name.startswith("_")}


def engine_calls(module) -> set[str]:
    """Every attribute the module reads or writes on an `engine` (self.engine.x, loop.engine.x)."""
    tree = ast.parse(Path(inspect.getfile(module)).read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "engine"
    }


def test_the_walk_finds_the_loops_calls():
    assert {"objective", "backward"} <= engine_calls(micro_batching)
    assert {"update", "zero_grad", "set_lr", "step_lrs", "compile"} <= engine_calls(loop)


@pytest.mark.parametrize("module", [loop, micro_batching, result_rows], ids=lambda m: m.__name__)
def test_the_loop_calls_only_what_the_engine_declares(module):
    assert engine_calls(module) - DECLARED == set()


@pytest.mark.parametrize("engine", [SoloEngine, PackedEngine], ids=lambda e: e.__name__)
def test_each_engine_provides_every_declared_operation(engine):
    methods = {name for name, value in vars(Engine).items() if callable(value) and not name.startswith("_")}
    assert {m for m in methods if not callable(getattr(engine, m, None))} == set()
    signatures = {m: inspect.signature(getattr(Engine, m)) for m in methods}
    for m in methods:  # same parameters, by name and kind (an engine may not widen or narrow the call)
        ours = [(p.name, p.kind) for p in inspect.signature(getattr(engine, m)).parameters.values()]
        assert ours == [(p.name, p.kind) for p in signatures[m].parameters.values()], m
    assert isinstance(engine.packed, bool)
