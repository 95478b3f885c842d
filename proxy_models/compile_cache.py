"""Compiling a model's blocks, with the compiled code cached on disk for every process of the machine.

`compile` is 'auto' by default: on CUDA the blocks of a dense model are compiled (solo and packed);
elsewhere (a first compile on a CPU costs tens of seconds, more than a short proxy run gains) and for MoE
models they run eager. `compile_scope` says whether each block is its own graph or the trunk is one.
Compiled and eager runs are the same run up to float rounding, so the choice is an execution detail, never
part of a run's identity (sweeps/plan.py).

Inductor's FX graph cache and AOT autograd cache (both on by default in torch 2.13) keep the compiled code
of every graph under one directory, keyed by the graph, shapes and torch version. Pointing every trial
process of a machine at one directory means the compile is paid once per model and shape, not once per
trial: a later process still traces the model (dynamo) but loads the compiled kernels instead of
generating them. The directory is `$POWERSWEEP_COMPILE_CACHE`, else `$XDG_CACHE_HOME/powersweep/compile`
(`~/.cache/powersweep/compile`); a `TORCHINDUCTOR_CACHE_DIR` already set is kept. Never the results store.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import torch

from proxy_models.run_config import CUDA_GRAPH_MODES

ENV_VAR = "POWERSWEEP_COMPILE_CACHE"
TORCH_ENV_VAR = "TORCHINDUCTOR_CACHE_DIR"  # read by inductor whenever it opens its caches


def resolve_compile(compile: str | bool, device: torch.device, *, moe: bool = False) -> bool:
    """Whether to compile: the config's bool as is; 'auto' compiles dense models on CUDA. An MoE block's
    expert split sizes are read on the host each step (moe.py), a graph break with new shapes every step,
    so 'auto' leaves MoE models eager."""
    if compile == "auto":
        return device.type == "cuda" and not moe
    return bool(compile)


def compile_cache_dir() -> str:
    """The directory of compiled code shared by this machine's trials (see the module docstring)."""
    if os.environ.get(ENV_VAR):
        return os.path.abspath(os.environ[ENV_VAR])
    if os.environ.get(TORCH_ENV_VAR):
        return os.path.abspath(os.environ[TORCH_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "powersweep", "compile")


def whole_trunk(mode: str, scope: str) -> bool:
    """Whether the blocks compile as one graph (TrainConfig.compile_scope; 'auto': in CUDA_GRAPH_MODES only)."""
    return scope == "trunk" or (scope == "auto" and mode in CUDA_GRAPH_MODES)


def compile_model(model, *, mode: str = "default", scope: str = "auto") -> None:
    """Compile a ProxyLM's blocks in place: each block alone, or the trunk as a whole (`whole_trunk`; its dense
    layers reuse one traced block: proxy_models/model.py's `run_dense_block`)."""
    if whole_trunk(mode, scope):
        model.trunk = compile_function(model.trunk, mode=mode)
    else:
        compile_blocks(model.blocks, mode=mode)


def compile_blocks(blocks: Iterable[torch.nn.Module], *, mode: str = "default") -> str | None:
    """torch.compile each block in place (parameter names, checkpoints and packing do not change), with
    inductor's caches in `compile_cache_dir()`; returns that directory, or None where it cannot be made (a
    read-only home: inductor's own default, a temporary directory, still caches per machine). Compiling
    happens at the first forward, so the directory is set here, before it. `mode` is torch.compile's."""
    directory = use_compile_cache()
    for block in blocks:
        block.compile(mode=mode)
    return directory


def compile_function(fn: Callable, *, mode: str = "default") -> Callable:
    """torch.compile a function (a model's trunk, packed variants' block or trunk) with the same on-disk cache."""
    use_compile_cache()
    return torch.compile(fn, mode=mode)


def use_compile_cache() -> str | None:
    """Point inductor's caches at `compile_cache_dir()`; the directory, or None where it cannot be made."""
    directory = compile_cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    os.environ[TORCH_ENV_VAR] = directory
    return directory
