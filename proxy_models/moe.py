"""Mixture-of-experts MLP: top-k softmax router over SwiGLU experts.

Two backends compute the same function on the same weights:
- "torch": sort token copies by expert and run one matmul pair per expert (runs everywhere);
- "scattermoe": the ScatterMoE Triton kernels (Tan et al. 2024, used by the paper's MoE models), when the
  package is importable and the input is on CUDA. It is optional; docs/how-to/gpu.md says how to install it.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F


@functools.cache
def scattermoe_ops():
    """ScatterMoE's (flatten_sort_count, parallel_linear), or None when it is not installed."""
    try:
        from scattermoe.parallel_experts import flatten_sort_count, parallel_linear
    except ImportError:
        return None
    return flatten_sort_count, parallel_linear


def route(router_logits: torch.Tensor, top_k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k experts per token and their weights (softmax over the chosen logits). Shapes (N, k)."""
    logits, experts = router_logits.topk(top_k, dim=-1)
    return logits.softmax(dim=-1), experts


def load_balance_loss(router_logits: torch.Tensor, experts: torch.Tensor, n_experts: int) -> torch.Tensor:
    """Switch-Transformer auxiliary loss:
    n_experts * sum_e (share of tokens to e) * (mean router prob of e)."""
    probs = router_logits.float().softmax(dim=-1).mean(dim=0)  # (E,)
    counts = torch.bincount(experts.flatten(), minlength=n_experts).to(probs.dtype)
    return n_experts * torch.dot(counts / experts.numel(), probs)


class MoEMLP(nn.Module):
    """SwiGLU experts with weights stacked on a leading expert dimension."""

    def __init__(
        self, d_model: int, expert_hidden: int, n_experts: int, top_k: int, *, backend: str = "auto"
    ):
        super().__init__()
        self.n_experts, self.top_k, self.backend = n_experts, top_k, backend
        self.router = nn.Linear(d_model, n_experts, bias=False)
        self.w_in = nn.Parameter(torch.empty(n_experts, d_model, 2 * expert_hidden))  # [gate | up]
        self.w_out = nn.Parameter(torch.empty(n_experts, expert_hidden, d_model))
        self.aux_loss = torch.zeros(())  # load-balancing loss of the last forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])  # (N, d)
        router_logits = self.router(x)  # (N, E)
        weights, experts = route(router_logits, self.top_k)  # (N, k) each
        self.aux_loss = load_balance_loss(router_logits, experts, self.n_experts)
        y = self._experts(x, weights.to(x.dtype), experts)
        return y.reshape(shape)

    def _experts(self, x, weights, experts) -> torch.Tensor:
        if self.resolved_backend(x) == "scattermoe":
            return self._scattermoe(x, weights, experts)
        return self._grouped(x, weights, experts)

    def resolved_backend(self, x: torch.Tensor) -> str:
        if self.backend == "auto":
            return "scattermoe" if x.is_cuda and scattermoe_ops() is not None else "torch"
        if self.backend == "scattermoe" and scattermoe_ops() is None:
            raise RuntimeError(
                "moe backend 'scattermoe' requested but not installed: see docs/how-to/gpu.md (ScatterMoE)"
            )
        return self.backend

    def _grouped(self, x, weights, experts) -> torch.Tensor:
        """Sort the N*k token copies by expert, run each expert once on its contiguous slice."""
        order = experts.flatten().argsort(stable=True)  # (N*k,)
        token = order // self.top_k  # which token each sorted copy came from
        counts = torch.bincount(experts.flatten(), minlength=self.n_experts).tolist()
        outputs, start = [], 0
        for e, count in enumerate(counts):
            rows = x[token[start : start + count]]  # (n_e, d)
            gate, up = (rows @ self.w_in[e]).chunk(2, dim=-1)
            outputs.append((F.silu(gate) * up) @ self.w_out[e])  # (n_e, d)
            start += count
        y_sorted = torch.cat(outputs) * weights.flatten()[order, None]
        return torch.zeros_like(x).index_add_(0, token, y_sorted)

    def _scattermoe(self, x, weights, experts) -> torch.Tensor:
        """ScatterMoE's kernels on operands of one dtype: autocast's when it is on, with autocast off inside.

        Its backward multiplies the tensors it saved with the incoming gradient as they come; under autocast
        those mix fp32 and bf16 ("expected scalar type Float but found BFloat16"). The casts of the expert
        weights are autograd ops, so their gradients still reach the fp32 parameters.
        """
        flatten_sort_count, parallel_linear = scattermoe_ops()
        dtype = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else x.dtype
        sorted_experts, sorted_copies, offsets = flatten_sort_count(experts, self.n_experts)
        with torch.autocast("cuda", enabled=False):
            x, weights, w_in, w_out = (t.to(dtype) for t in (x, weights, self.w_in, self.w_out))
            h = parallel_linear(x, w_in, self.top_k, sorted_experts, sorted_copies, offsets, grouped_out=True)
            gate, up = h.chunk(2, dim=-1)
            return parallel_linear(
                F.silu(gate) * up,
                w_out,
                1,
                sorted_experts,
                sorted_copies,
                offsets,
                gates=weights,
                grouped_in=True,
            )


def reference_moe(moe: MoEMLP, x: torch.Tensor) -> torch.Tensor:
    """Naive per-token, per-choice loop: the definition the fast backends must match (tests only)."""
    flat = x.reshape(-1, x.shape[-1])
    weights, experts = route(moe.router(flat), moe.top_k)
    out = torch.zeros_like(flat)
    for n in range(flat.shape[0]):
        for j in range(moe.top_k):
            e = experts[n, j]
            gate, up = (flat[n] @ moe.w_in[e]).chunk(2, dim=-1)
            out[n] += weights[n, j] * ((F.silu(gate) * up) @ moe.w_out[e])
    return out.reshape(x.shape)
