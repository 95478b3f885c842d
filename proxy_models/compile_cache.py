"""Compiling a model's blocks, with the compiled code cached on disk for every process of the machine.

`compile` is 'auto' by default: on CUDA the blocks of a dense model are compiled (solo and packed);
elsewhere (a first compile on a CPU costs tens of seconds, more than a short proxy run gains) and for MoE
models they run eager. `compile_scope` says whether the block is one graph that serves every layer or the
trunk is one.
Compiled and eager runs are the same run up to float rounding, so the choice is an execution detail, never
part of a run's identity (sweeps/lineages.py). That is also why 'auto' falls back to eager where compiling
fails on a machine (no C compiler for inductor or Triton, an unsupported GPU): the run goes on, and its row
says why (`compile_error`), and later runs of the process start eager; with `compile: true` the failure is an
error that says how to turn compiling off.

Inductor's FX graph cache and AOT autograd cache (both on by default in torch 2.13) keep the compiled code
of every graph under one directory, keyed by the graph, shapes and torch version. Pointing every trial
process of a machine at one directory means the compile is paid once per model and shape, not once per
trial: a later process still traces the model (dynamo) but loads the compiled kernels instead of
generating them. The directory is `$POWERSWEEP_COMPILE_CACHE`, else `$XDG_CACHE_HOME/powersweep/compile`
(`~/.cache/powersweep/compile`); a `TORCHINDUCTOR_CACHE_DIR` already set is kept. Never the results store.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from powersweep.proxy_models.model import run_block
from powersweep.proxy_models.train_config import CUDA_GRAPH_MODES

ENV_VAR = "POWERSWEEP_COMPILE_CACHE"
TORCH_ENV_VAR = "TORCHINDUCTOR_CACHE_DIR"  # read by inductor whenever it opens its caches


def resolve_compile(compile: str | bool, device: torch.device, *, moe: bool = False) -> bool:
    """Whether to compile: the config's bool as is; 'auto' compiles dense models on CUDA. An MoE block's
    expert split sizes are read on the host each step (moe.py), a graph break with new shapes every step,
    so 'auto' leaves MoE models eager."""
    if compile == "auto":
        return device.type == "cuda" and not moe
    return bool(compile)


# CUDA graphs pay where a step waits on the host: where one layer's forward and backward of a micro-batch
# would take under this many seconds even at the chip's bf16 peak, its ~50 kernel launches take longer than
# the kernels. One H100 node (benchmarks/RESULTS.md): paper-12m at 16 x 4096 (0.49 ms a layer at peak) ran
# 1.5-1.6x faster as CUDA graphs; paper-36m at 16 x 4096 (1.13 ms) and paper-12m at micro-batch 64 x 4096
# (1.97 ms) no faster.
HOST_BOUND_LAYER_SECONDS = 0.75e-3


def resolve_compile_mode(
    mode: str,
    scope: str,
    device: torch.device,
    *,
    packed: bool = False,
    moe: bool = False,
    layer_seconds: float = 0.0,
) -> str:
    """torch.compile's mode (TrainConfig.compile_mode): as given; 'auto' is 'reduce-overhead' (the trunk
    replayed as CUDA graphs) for a solo dense run on CUDA whose step waits on the host, unless its scope is
    'blocks', and 'default' elsewhere. `layer_seconds`: one layer's forward and backward of one micro-batch at
    the device's peak (perf.layer_seconds).

    A small model's solo step launches about 1,700 kernels; on one H100 node that host work took 113 ms of a
    step whose kernels ran 63 ms (paper-12m at 16 x 4096), and CUDA graphs ran the same step in 71 ms. Where a
    layer's kernels take longer than its launches (HOST_BOUND_LAYER_SECONDS) graphs gain nothing and cost a
    longer first compile (the whole trunk) and their memory pools. Packed variants' kernels are K times
    larger, so their step does not wait on the host either (8 variants on one H200: 10 GiB more, 2.7% slower).
    MoE blocks read their experts' sizes on the host each step. benchmarks/RESULTS.md has the numbers."""
    if mode != "auto":
        return mode
    graphs = (
        device.type == "cuda"
        and not packed
        and not moe
        and scope != "blocks"
        and layer_seconds < HOST_BOUND_LAYER_SECONDS
    )
    return "reduce-overhead" if graphs else "default"


def compile_cache_dir() -> str:
    """The directory of compiled code shared by this machine's trials (see the module docstring)."""
    if os.environ.get(ENV_VAR):
        return os.path.abspath(os.environ[ENV_VAR])
    if os.environ.get(TORCH_ENV_VAR):
        return os.path.abspath(os.environ[TORCH_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "powersweep", "compile")


def whole_trunk(mode: str, scope: str) -> bool:
    """Whether the blocks compile as one graph
    (TrainConfig.compile_scope; 'auto': in CUDA_GRAPH_MODES only)."""
    return scope == "trunk" or (scope == "auto" and mode in CUDA_GRAPH_MODES)


def compile_model(model, *, mode: str = "default", scope: str = "auto") -> None:
    """Compile a ProxyLM's blocks in place: one compiled block function for every layer, or the trunk as a
    whole (`whole_trunk`; its dense layers reuse one traced block: proxy_models/model.py's `run_dense_block`).
    Parameter names, checkpoints and packing do not change; `uncompile_model` undoes it."""
    if whole_trunk(mode, scope):
        model.trunk = compile_function(model.trunk, mode=mode)
    else:
        model.compiled_block = compile_function(run_block, mode=mode)


def uncompile_model(model) -> None:
    """Put a ProxyLM compiled by `compile_model` back to eager."""
    for name in ("trunk", "compiled_block"):
        model.__dict__.pop(name, None)


_failure: str | None = None  # why compiling failed in this process: 'auto' does not try again here


def record_compile_failure(error: Exception) -> str:
    """Remember for this process that compiling failed, and say why in one line (for a warning, an error and
    the row's provenance): the backend's own error where dynamo wraps one (BackendCompilerFailed)."""
    global _failure
    cause = getattr(error, "inner_exception", None) or error
    lines = [line.strip() for line in str(cause).splitlines() if line.strip()]
    _failure = f"{type(cause).__name__}: {lines[0] if lines else 'no message'}"[:300]
    return _failure


def compile_failed_here() -> str | None:
    """Why compiling failed earlier in this process (`record_compile_failure`), or None."""
    return _failure


RECOMPILE_LIMIT = 64  # graphs one compiled function keeps (shapes, grad modes) before dynamo runs it eager


def compile_function(fn: Callable, *, mode: str = "default") -> Callable:
    """torch.compile a function (a model's block or trunk, packed variants' block or trunk) with inductor's
    caches in `compile_cache_dir()`. Compiling happens at the first call, so the directory is set here, before
    it. `mode` is torch.compile's.

    The graphs are static: a run's shapes are fixed (its micro-batch, the evaluation's batch), and a new shape
    (a halved micro-batch, another model in the same process) compiles a graph of its own rather than one
    with symbolic sizes, whose kernels cannot specialise to the sizes. Every model of a process shares the
    compiled block function, so dynamo may keep up to RECOMPILE_LIMIT graphs of it."""
    use_compile_cache()
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(fn, mode=mode, dynamic=False)


def use_compile_cache() -> str | None:
    """Point inductor's caches at `compile_cache_dir()`; the directory, or None where it cannot be made."""
    directory = compile_cache_dir()
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError:
        return None
    os.environ[TORCH_ENV_VAR] = directory
    return directory
