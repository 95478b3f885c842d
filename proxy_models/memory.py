"""Peak memory of one training step from shapes alone, and the micro-batch that fits a memory budget.

The estimate adds what a step holds at its peak (the start of backward):
- state: parameters, their gradients and AdamW's two moments (4 copies in the parameter dtype), plus the
  compute-dtype copies of the weights autocast makes and the matmuls save;
- activations saved for backward, per token and layer: the fp32 residual stream at both norms, the
  norms' outputs cast for the matmuls, q, k, v, their rotated copies, the attention output (and its
  log-sum-exp) and its transposed copy, and the SwiGLU's [gate | up], silu(gate) and product; with
  activation checkpointing only each block's input, plus one block's recomputed activations;
- the head: the full path holds (N, vocab) logits in the compute dtype and three fp32 (N, vocab) buffers
  (upcast, log-softmax, gradient); the chunked and fused paths hold the gradients of h and of the
  embedding matrix and one chunk of logits;
- transient: one layer's activation gradients during backward.
Attention is SDPA (flash or memory-efficient): no (T, T) scores. Checked against measured peaks in
benchmarks/RESULTS.md ("Memory of one step").
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from powersweep.proxy_models.shapes import ConfigError, ProxyConfig

GIB = 2**30
# fp32 logits of one chunk of the chunked head: 64 MiB keeps its matmuls large, its memory small
CHUNK_BYTES = 64 * 2**20
# Logits (compute dtype) of one chunk of the fused head. liger-kernel's own default bounds a chunk's logits by
# the size of its input, V / d_model chunks per step: 384 for paper-12m (d_model 128), each a handful of small
# kernels, which left the step waiting on the host (benchmarks/RESULTS.md, "GPU"). 1 GiB makes it a few
# chunks.
FUSED_CHUNK_BYTES = 2**30
USABLE_FRACTION = 0.9  # of free device memory: the allocator's fragmentation and cuBLAS/cuDNN workspaces
CUDA_CONTEXT_BYTES = GIB  # what the CUDA context and kernels' code take before any tensor
_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}


@dataclass(frozen=True)
class StepMemory:
    """Bytes one training step holds at its peak, by kind; `peak` is their sum."""

    state: int  # parameters, gradients, AdamW moments, compute-dtype weight copies
    activations: int  # saved for backward by one micro-batch
    head: int  # the output head's buffers
    transient: int  # one layer's activation gradients during backward

    @property
    def peak(self) -> int:
        return self.state + self.activations + self.head + self.transient


@dataclass(frozen=True)
class MicroBatchChoice:
    """The micro-batch (sequences) and checkpointing chosen for a budget, and the step's estimated memory."""

    micro_batch_size: int
    activation_checkpointing: bool
    memory: StepMemory


def chunk_tokens_for(vocab_size: int) -> int:
    """Tokens per chunk of the chunked head (proxy_models/head.py) whose fp32 logits take CHUNK_BYTES."""
    return max(1, CHUNK_BYTES // (4 * vocab_size))


def head_path(head: str, *, tokens: int, vocab_size: int, fused: bool) -> str:
    """The head's path for a forward of `tokens` tokens (one variant's micro-batch): 'auto' is the full head
    while its fp32 logits fit one chunk (there no path saves memory worth having, and the plain one waits on
    nothing), above that the fused head where it runs (`fused`: CUDA with liger-kernel), else the chunked
    one; any other head is itself. The rule both the model and the memory estimate follow."""
    if head != "auto":
        return head
    if tokens <= chunk_tokens_for(vocab_size):
        return "full"
    return "fused" if fused else "chunked"


def parse_bytes(text: str) -> int:
    """'80GiB' -> 85899345920, '80GB' -> 8e10, '512MiB', '1e9' (bytes). Raises ConfigError otherwise."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    unit = match and match.group(2).lower()
    if not match or unit not in _UNITS:
        raise ConfigError(f"memory size {text!r}: write a number and a unit, e.g. 80GiB, 80GB or 512MiB")
    return int(float(match.group(1)) * _UNITS[unit])


def layer_activation_bytes(cfg: ProxyConfig, *, compute_bytes: int, residual_bytes: int) -> int:
    """Bytes one block saves for backward, per token."""
    d, hd, h, kv = cfg.d_model, cfg.d_head, cfg.n_heads, cfg.kv_heads
    norms = 2 * d * (residual_bytes + compute_bytes)  # norm inputs (residual stream) and cast outputs
    # q,kv; rotated q,k; out, copy; lse
    attention = compute_bytes * hd * (h + 2 * kv + h + kv + 2 * h) + 4 * h
    if cfg.is_moe:  # each token's top_k copies: gathered rows, [gate | up], silu, product; router logits
        mlp = cfg.top_k * compute_bytes * (d + 4 * cfg.expert_hidden) + 4 * cfg.n_experts
    else:
        mlp = 4 * cfg.mlp_hidden * compute_bytes
    return norms + attention + mlp


def fused_chunking(tokens: int, vocab_size: int, d_model: int, *, compute_bytes: int) -> tuple[int, int]:
    """(chunk_mem_const, rows per chunk) for liger-kernel's fused linear cross-entropy of `tokens` rows: the
    fewest chunks whose logits fit FUSED_CHUNK_BYTES. liger cuts N rows into ceil(V / (c * d)) parts and
    rounds a part up to a power of two rows; c = chunk_mem_const. Called every step: cached."""
    return _fused_chunking(tokens, vocab_size, d_model, compute_bytes, FUSED_CHUNK_BYTES)


@functools.lru_cache(maxsize=256)
def _fused_chunking(
    tokens: int, vocab_size: int, d_model: int, compute_bytes: int, chunk_bytes: int
) -> tuple[int, int]:
    most_rows = max(1, chunk_bytes // (vocab_size * compute_bytes))
    for c in range(-(-vocab_size // d_model), 0, -1):  # from one part down; fewer parts, bigger chunks
        rows = _liger_chunk_rows(tokens, vocab_size, d_model, c)
        if rows <= most_rows:
            return c, rows
    return 1, _liger_chunk_rows(tokens, vocab_size, d_model, 1)


def _liger_chunk_rows(tokens: int, vocab_size: int, d_model: int, chunk_mem_const: int) -> int:
    parts = -(-vocab_size // (chunk_mem_const * d_model))
    return min(tokens, 1 << (-(-tokens // parts) - 1).bit_length())


def head_bytes(
    cfg: ProxyConfig, tokens: int, *, head: str, compute_bytes: int, residual_bytes: int, variants: int = 1
) -> int:
    """Bytes of the output head's buffers for `tokens` tokens on path `head` (full, chunked or fused) of each
    of `variants` packed ones. The full head keeps every variant's logits for backward (all variants' at
    once); the others run one variant after another, each keeping its gradients for backward, while one
    chunk of logits exists at a time."""
    v, d = cfg.vocab_size, cfg.d_model
    if head == "full":
        return variants * tokens * v * (compute_bytes + 3 * 4)
    if head == "fused":
        _, chunk = fused_chunking(tokens, v, d, compute_bytes=compute_bytes)
        return variants * (tokens * d * compute_bytes + v * d * 4) + 2 * chunk * v * compute_bytes
    chunk = min(tokens, chunk_tokens_for(v))
    return variants * (tokens * d * residual_bytes + v * d * 4) + chunk * v * (4 + 2 * compute_bytes)


def step_memory(
    cfg: ProxyConfig,
    *,
    micro_batch_size: int,
    compute_bytes: int = 2,
    param_bytes: int = 4,
    activation_checkpointing: bool = False,
    head: str = "auto",
    fused_head: bool = True,
    variants: int = 1,
) -> StepMemory:
    """Estimated peak bytes of one step of `cfg` at `micro_batch_size` sequences of cfg.seq_len tokens.

    compute_bytes: 2 under bf16 autocast, else param_bytes; head: a config's head, resolved by `head_path`
    (`fused_head`: whether the fused head can run, as on a GPU with liger-kernel). `variants`
    packed in lockstep (proxy_models/packed.py) hold every kind of memory once each: stacked parameters and
    optimizer state, activations of the variants folded into the batch, and each variant's head gradients
    (they wait for backward), with one chunk of logits at a time.
    """
    tokens = micro_batch_size * cfg.seq_len
    params = cfg.num_params()
    casts = params * compute_bytes if compute_bytes != param_bytes else 0
    layer = layer_activation_bytes(cfg, compute_bytes=compute_bytes, residual_bytes=param_bytes)
    if activation_checkpointing:
        saved = tokens * cfg.n_layers * cfg.d_model * param_bytes + tokens * layer
    else:
        saved = tokens * cfg.n_layers * layer
    saved += 3 * tokens * cfg.d_model * param_bytes  # embedding output, final norm's input and output
    path = head_path(head, tokens=tokens, vocab_size=cfg.vocab_size, fused=fused_head)
    head_buffers = head_bytes(
        cfg, tokens, head=path, compute_bytes=compute_bytes, residual_bytes=param_bytes, variants=variants
    )
    # A pack's backward hands back every gradient before they are added into its (K, P) buffer.
    handed_back = variants * params * param_bytes if variants > 1 else 0
    return StepMemory(
        state=variants * (4 * params * param_bytes + casts),
        activations=variants * saved,
        head=head_buffers,
        transient=variants * tokens * layer + handed_back,
    )


def trunk_copy_bytes(cfg: ProxyConfig, *, variants: int = 1, param_bytes: int = 4) -> int:
    """Bytes of the trunk state a lineage keeps on the device while a branch decays (proxy_models/lineage.py
    copies it at each fork and restores it after): every variant's weights and both AdamW moments."""
    return 3 * variants * cfg.num_params() * param_bytes


def device_budget(total_bytes: int) -> int:
    """Bytes a step may plan for on a GPU of `total_bytes`: what the context leaves, less the margin."""
    return int((total_bytes - CUDA_CONTEXT_BYTES) * USABLE_FRACTION)


def divisors_descending(n: int) -> list[int]:
    return [k for k in range(n, 0, -1) if n % k == 0]


def choose_micro_batch(
    cfg: ProxyConfig, *, batch_size: int, budget_bytes: int, checkpointing: str = "auto", **precision
) -> MicroBatchChoice:
    """The largest divisor of batch_size whose step fits `budget_bytes`; with checkpointing 'auto' the
    blocks are checkpointed only when no micro-batch fits without ('on' and 'off' force it).

    `precision` goes to `step_memory` (compute_bytes, param_bytes, head, variants). Raises ConfigError when
    not even one sequence fits.
    """
    options = {"off": (False,), "on": (True,), "auto": (False, True)}[checkpointing]
    for ckpt in options:
        for micro in divisors_descending(batch_size):
            memory = step_memory(cfg, micro_batch_size=micro, activation_checkpointing=ckpt, **precision)
            if memory.peak <= budget_bytes:
                return MicroBatchChoice(micro, ckpt, memory)
    smallest = step_memory(cfg, micro_batch_size=1, activation_checkpointing=options[-1], **precision)
    raise ConfigError(
        f"memory budget {budget_bytes / GIB:.2f} GiB: one sequence of {cfg.seq_len} tokens needs about "
        f"{smallest.peak / GIB:.2f} GiB; use a device with more memory or a shorter seq_len"
    )
