"""The output head's loss without the (N, vocab) logits: cross-entropy of `scale * h @ weight.T`.

Three paths compute the same mean cross-entropy (nats/token) of N tokens:
- "full": the logits of all N tokens at once, upcast to fp32 (what autograd would do; small models);
- "chunked": pure torch, `chunk_tokens` rows of logits at a time, each chunk's gradient computed in the
  forward (as fused kernels do), so only one chunk of logits ever exists (big heads off CUDA);
- "fused": liger-kernel's Triton fused linear cross-entropy (CUDA, the `gpu` extra), in a few large chunks
  (big heads on CUDA).
`scale` is the muP output multiplier 1 / m_width; every path applies it exactly.
"""

from __future__ import annotations

import functools
import inspect

import torch
import torch.nn.functional as F

from powersweep.proxy_models.memory import chunk_tokens_for, fused_chunking, head_path
from powersweep.proxy_models.train_config import HEADS


@functools.cache
def liger_loss():
    """liger-kernel's fused linear cross-entropy function, or None when it is not installed (or older than
    0.8.5, whose chunk size cannot be set)."""
    try:
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
    except ImportError:
        return None
    if "chunk_mem_const" not in inspect.signature(liger_fused_linear_cross_entropy).parameters:
        return None
    return liger_fused_linear_cross_entropy


def resolve_head(head: str, *, n_tokens: int, vocab_size: int, device: torch.device) -> str:
    """The path `head` means for N tokens on `device` (`memory.head_path`): 'auto' is the full head while the
    logits fit one chunk, on any device; above that fused on CUDA with liger-kernel, else chunked."""
    if head not in HEADS:
        raise ValueError(f"head={head!r}: choose one of {list(HEADS)}")
    if head == "fused" and not fused_available(device):
        raise RuntimeError(
            "head 'fused' needs CUDA and liger-kernel: pip install -e '.[gpu]' (docs/how-to/gpu.md)"
        )
    fused = may_fuse(head, n_tokens=n_tokens, vocab_size=vocab_size, device=device)
    return head_path(head, tokens=n_tokens, vocab_size=vocab_size, fused=fused)


def may_fuse(head: str, *, n_tokens: int, vocab_size: int, device: torch.device) -> bool:
    """Whether `head` for up to N tokens is the fused head on `device`. Asks whether liger-kernel is there
    (its import loads Triton's kernels: seconds of a trial's start) only where the logits exceed one chunk."""
    wants = head_path(head, tokens=n_tokens, vocab_size=vocab_size, fused=True) == "fused"
    return wants and fused_available(device)


def fused_available(device: torch.device) -> bool:
    """Whether the fused head runs on `device`: CUDA with liger-kernel installed."""
    return device.type == "cuda" and liger_loss() is not None


def head_loss(
    h: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    scale: float,
    head: str,
    chunk_tokens: int = 0,
) -> torch.Tensor:
    """Mean cross-entropy of softmax(scale * h @ weight.T) at `targets`.
    h: (N, d), weight: (V, d), targets (N,).

    `head` is one of 'full', 'chunked', 'fused' (resolved: see `resolve_head`); chunk_tokens 0 = CHUNK_BYTES.
    """
    if head == "full":
        return full_loss(h, weight, targets, scale=scale)
    if head == "fused":
        return fused_loss(h, weight, targets, scale=scale)
    chunk = chunk_tokens or chunk_tokens_for(weight.shape[0])
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return ChunkedLinearCrossEntropy.apply(h, weight, targets, scale, chunk)
    return _chunked_loss_only(h, weight, targets, scale=scale, chunk=chunk)


def full_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, scale: float) -> torch.Tensor:
    """The reference: all (N, V) logits at once, upcast to fp32 (fp64 stays fp64)."""
    logits = F.linear(h, weight) * scale  # (N, V)
    return F.cross_entropy(logits.to(_loss_dtype(logits)), targets)


def full_losses(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, scale: float
) -> torch.Tensor:
    """`full_loss` of K packed variants at once, one batched matmul and one cross-entropy for all (not K of
    each): h (K, N, d), weight (K, V, d), targets (K, N) -> (K,)."""
    logits = torch.bmm(h, weight.transpose(1, 2)) * scale  # (K, N, V)
    losses = F.cross_entropy(
        logits.to(_loss_dtype(logits)).flatten(0, 1), targets.flatten(), reduction="none"
    )  # (K * N,)
    return losses.view(targets.shape).mean(dim=1)


def fused_loss(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, *, scale: float) -> torch.Tensor:
    """liger-kernel's fused kernel on (scale * h) and weight, both in the autocast dtype when autocast is on,
    in chunks of FUSED_CHUNK_BYTES of logits (proxy_models/memory.py).

    scale * (h @ W.T) == (scale * h) @ W.T, so the muP multiplier goes on h. The kernel runs with autocast
    off and explicit dtypes: liger's matmuls do not cast mixed inputs themselves.
    """
    dtype = _matmul_dtype(h)
    chunk_mem_const, _ = fused_chunking(
        targets.numel(), weight.shape[0], weight.shape[1], compute_bytes=dtype.itemsize
    )
    with torch.autocast("cuda", enabled=False):
        # fp32 accumulation of the weight's gradient over chunks; bf16 would round each chunk's share away.
        return liger_loss()(
            (h * scale).to(dtype),
            weight.to(dtype),
            targets,
            reduction="mean",
            accum_dtype=torch.float32,
            chunk_mem_const=chunk_mem_const,
        )


def _loss_dtype(logits: torch.Tensor) -> torch.dtype:
    return torch.promote_types(logits.dtype, torch.float32)  # bf16 -> fp32, fp64 stays


def _matmul_dtype(h: torch.Tensor) -> torch.dtype:
    """The dtype F.linear computes in here: autocast's when it is on, else h's."""
    device = h.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else h.dtype


def _chunk_logits(h_chunk: torch.Tensor, weight: torch.Tensor, scale: float) -> torch.Tensor:
    """fp32 (or fp64) logits of one chunk, (c, V);
    the matmul runs in the autocast dtype when autocast is on."""
    logits = F.linear(h_chunk, weight)
    return logits.to(_loss_dtype(logits)).mul_(scale)


def _chunked_loss_only(h, weight, targets, *, scale: float, chunk: int) -> torch.Tensor:
    """The loss alone (evaluation), chunk by chunk."""
    total = h.new_zeros((), dtype=torch.promote_types(h.dtype, torch.float32))
    for h_c, y_c in zip(h.split(chunk), targets.split(chunk)):
        total = total + F.cross_entropy(_chunk_logits(h_c, weight, scale), y_c, reduction="sum")
    return total / targets.numel()


class ChunkedLinearCrossEntropy(torch.autograd.Function):
    """Loss and both gradients in one pass over the chunks; backward only scales the stored gradients.

    Per chunk: logits z = scale * h_c W^T, loss = logsumexp(z) - z[y]; dloss/dz = softmax(z) - onehot(y),
    so dh_c = scale * (dloss/dz) W and dW += scale * (dloss/dz)^T h_c, each over N for the mean.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, scale, chunk):
        n, mm_dtype = targets.numel(), _matmul_dtype(h)
        grad_h = torch.empty_like(h)
        grad_w = torch.zeros_like(weight, dtype=torch.promote_types(weight.dtype, torch.float32))
        total = h.new_zeros((), dtype=torch.promote_types(h.dtype, torch.float32))
        for start in range(0, n, chunk):
            h_c, y_c = h[start : start + chunk], targets[start : start + chunk]
            z = _chunk_logits(h_c, weight, scale)  # (c, V)
            lse = z.logsumexp(dim=-1)  # (c,)
            total += (lse - z.gather(1, y_c[:, None]).squeeze(1)).sum()
            grad_z = z.sub_(lse[:, None]).exp_()  # softmax, in place of the logits
            grad_z[torch.arange(len(y_c), device=z.device), y_c] -= 1
            grad_z = grad_z.mul_(scale / n).to(mm_dtype)
            grad_h[start : start + chunk] = grad_z @ weight.to(grad_z.dtype)
            grad_w += grad_z.T @ h_c.to(grad_z.dtype)
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype))
        return total / n

    @staticmethod
    def backward(ctx, grad_out):
        grad_h, grad_w = ctx.saved_tensors
        return grad_h * grad_out, grad_w * grad_out, None, None, None
