"""A training loop's result rows: one `RunResult` per variant at a token budget, with how it trained.

Each row holds the variant's schedule and cell, its held-out and training losses, divergence, wall time and
throughput (a packed run's throughput is the sum over its variants: each row has its own tokens over the
run's wall time), MFU with and without attention FLOPs, the device, and `execution`: JSON text saying how
the run executed (variants packed, micro-batch, checkpointing, compiled blocks or why not, out-of-memory
errors absorbed).
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING

from powersweep.proxy_models.perf import (
    attention_flops_per_token,
    compute_dtype,
    device_name,
    mfu,
    peak_flops,
    utilisation,
)
from powersweep.proxy_models.shapes import ProxyConfig
from powersweep.proxy_models.train_config import TrainConfig
from powersweep.rows import RunResult

if TYPE_CHECKING:
    from powersweep.proxy_models.loop import TrainingLoop


def result_rows(loop: TrainingLoop, *, tokens: float) -> list[RunResult]:
    """One row per variant for the budget `tokens`, evaluating the variants as they are now."""
    evals = [math.nan] * loop.k if loop.diverged else loop.evaluate_variants()
    trained = loop.step * loop.cfg.tokens_per_step
    tokens_per_s = trained / loop.train_seconds if loop.train_seconds else math.nan
    n_params, p = loop.proxy.num_params(active=True), loop.proxy
    peak = peak_flops(loop.device, compute_dtype(loop.device, loop.cfg.dtype))
    attention = attention_flops_per_token(p.n_layers, p.n_heads, p.d_head, p.seq_len)
    return [
        _result_row(
            config,
            loop.proxy,
            tokens=tokens,
            loss_train=loop.variant_loss_train(i),
            loss_eval=evals[i] if math.isnan(loop.diverged_ats[i]) else math.nan,
            diverged_at=loop.diverged_ats[i],
            wall_s=loop.train_seconds,
            tokens_per_s=tokens_per_s,
            mfu=mfu(n_params, tokens_per_s, peak),
            mfu_attention=utilisation(6 * n_params + attention, tokens_per_s, peak),
            device=device_name(loop.device),
            execution=execution_record(loop),
            data_fingerprint=loop.corpus.fingerprint,
            data_held_out=loop.corpus.held_out,
        )
        for i, config in enumerate(loop.configs)
    ]


def execution_record(loop: TrainingLoop) -> str:
    """How the loop trained, as JSON text for the row's provenance: variants packed, micro-batch,
    checkpointing, compiled blocks (and why not, where compiling failed) and the out-of-memory errors it
    absorbed (this process's, not restored by checkpoints)."""
    failed = {"compile_error": loop.compile_error} if loop.compile_error else {}
    mode = {"compile_mode": loop.compile_mode} if loop.compiled else {}
    return json.dumps(
        {
            "pack": loop.k,
            "micro_batch_size": loop.micro_batch_size,
            "compiled": loop.compiled,
            **mode,
            "activation_checkpointing": bool(loop.engine.checkpointing),
            "out_of_memory_shrinks": loop.micro_batch_shrinks,
            **failed,
        },
        sort_keys=True,
    )


def _result_row(cfg: TrainConfig, proxy: ProxyConfig, **measured) -> RunResult:
    s = cfg.schedule
    is_power = s.name == "power"
    nan = math.nan
    status = "diverged" if not math.isnan(measured["diverged_at"]) else "ok"
    return RunResult(
        model=cfg.model,
        n_params=proxy.num_params(),
        n_params_non_embedding=proxy.num_params(embedding=False),
        d_model=proxy.d_model,
        m_width=proxy.m_width,
        parametrisation="mup" if proxy.use_mup else "sp",
        schedule=s.name,
        lr=s.peak_lr(batch_size=cfg.batch_size),
        lr_max=s.lr_max if is_power else nan,
        power_a=s.power_a if is_power else nan,
        power_b=s.power_b if is_power else nan,
        batch_size=cfg.batch_size,
        seq_len=proxy.seq_len,
        tokens=measured.pop("tokens"),
        warmup_tokens=s.warmup_tokens,
        decay_fraction=s.decay_fraction,
        decay_shape=s.decay_shape,
        seed=cfg.seed,
        ppl_eval=math.exp(measured["loss_eval"]) if status == "ok" else nan,
        status=status,
        diverged_at_tokens=measured.pop("diverged_at"),
        **measured,
    )
