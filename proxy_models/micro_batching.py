"""A step's micro-batches: how many sequences each holds, and what a CUDA out-of-memory error changes.

`plan` chooses the micro-batch (and activation checkpointing) from the config, or for 'auto' from the memory
estimate of all K variants' step within `memory_budget_bytes`. `gradients` accumulates a step's gradients
over its micro-batches, each weighted by its share of the batch; a CUDA out-of-memory error halves the
micro-batch (at one sequence, checkpoints the blocks instead; under CUDA graphs, compiles again without them)
and starts the step's gradients again: no update was applied, so the step is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from powersweep.proxy_models.head import may_fuse
from powersweep.proxy_models.memory import GIB, USABLE_FRACTION, choose_micro_batch, divisors_descending
from powersweep.proxy_models.perf import compute_dtype
from powersweep.proxy_models.shapes import ConfigError
from powersweep.proxy_models.train_config import CUDA_GRAPH_MODES, TrainConfig

if TYPE_CHECKING:
    from powersweep.proxy_models.loop import TrainingLoop


def plan(loop: TrainingLoop) -> tuple[int, bool]:
    """(micro-batch size, activation checkpointing) from the config; 'auto' from the memory estimate of all K
    variants' step."""
    cfg, forced = loop.cfg, loop.cfg.activation_checkpointing == "on"
    micro = cfg.micro_batch_size
    if micro is None:
        micro = "auto" if loop.device.type == "cuda" else cfg.batch_size
    if micro != "auto":
        return micro, forced
    choice = choose_micro_batch(
        loop.proxy,
        batch_size=cfg.batch_size,
        budget_bytes=memory_budget_bytes(cfg, loop.device),
        checkpointing=cfg.activation_checkpointing,
        head=cfg.head,
        fused_head=may_fuse(
            cfg.head, n_tokens=cfg.tokens_per_step, vocab_size=loop.proxy.vocab_size, device=loop.device
        ),
        param_bytes=loop.param_dtype.itemsize,
        compute_bytes=compute_dtype(loop.device, cfg.dtype).itemsize,
        variants=loop.k,
    )
    return choice.micro_batch_size, choice.activation_checkpointing


def memory_budget_bytes(cfg: TrainConfig, device: torch.device) -> int:
    """Bytes a step may use: memory_budget_gib, else 90% of the CUDA memory free or held by this process
    (allocated, or cached by its allocator from an earlier trainer: reused before the device's free
    memory)."""
    if cfg.memory_budget_gib is not None:
        return int(cfg.memory_budget_gib * GIB)
    if device.type != "cuda":
        raise ConfigError(
            "micro_batch_size='auto' off CUDA needs memory_budget_gib (e.g. 4): "
            "there is no device memory to measure"
        )
    free, _ = torch.cuda.mem_get_info(device)
    return int((free + torch.cuda.memory_reserved(device)) * USABLE_FRACTION)


def gradients(loop: TrainingLoop, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The step's gradients, accumulated over micro-batches; the batch's mean loss(es). A CUDA out-of-memory
    error halves the micro-batch and starts the step's gradients again."""
    while True:
        try:
            return loop.eager_if_compiling_fails(_accumulate, loop, x, y)
        except torch.cuda.OutOfMemoryError:
            if not _can_shrink(loop):
                raise
        _shrink(loop)  # outside `except`: the failed attempt's tensors are freed by now


def _accumulate(loop: TrainingLoop, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Backward over the micro-batches, each weighted by its share of the batch; the mean loss(es)."""
    size = loop.micro_batch_size
    total = None  # the batch dimension is the one before the sequence: (B, T), or (K, B, T) per variant
    for xs, ys in zip(x.split(size, dim=-2), y.split(size, dim=-2)):
        share = xs.shape[-2] / loop.cfg.batch_size
        with loop.autocast():
            objective, loss = loop.engine.objective(xs, ys)
        loop.engine.backward((objective * share).sum())  # variants share no parameter: one backward for all
        part = loss.detach().double() * share
        total = part if total is None else total + part
    return total


def _can_shrink(loop: TrainingLoop) -> bool:
    return loop.micro_batch_size > 1 or not loop.engine.checkpointing


def _shrink(loop: TrainingLoop) -> None:
    """Half the micro-batch (the largest divisor of batch_size at most half of it); at one sequence,
    checkpoint the blocks instead. Under CUDA graphs, compile again without them first."""
    loop.engine.zero_grad()
    if loop.compiled and loop.compile_mode in CUDA_GRAPH_MODES:
        _leave_cuda_graphs(loop)
    if loop.device.type == "cuda":
        torch.cuda.empty_cache()
    smaller = [d for d in divisors_descending(loop.cfg.batch_size) if d <= loop.micro_batch_size // 2]
    if smaller:
        loop.micro_batch_size = smaller[0]
    else:
        loop.engine.checkpointing = True
    loop.micro_batch_shrinks += 1


def _leave_cuda_graphs(loop: TrainingLoop) -> None:
    """Compile the model again in mode 'default': a CUDA graph holds its memory pool as long as it lives,
    so after an out-of-memory error the smaller micro-batch trains without graphs (and frees theirs)."""
    # inductor's: imported when compiling
    from torch._inductor.cudagraph_trees import reset_cudagraph_trees

    loop.engine.uncompile()
    reset_cudagraph_trees()
    loop.compile_mode = "default"
    loop.engine.compile(loop.compile_mode, loop.cfg.compile_scope)
