"""The muP proxy transformer: pre-norm blocks of RoPE attention and a SwiGLU MLP (dense or MoE).

Every muP rule of the Power Scheduler paper's Table 1 acts at a line marked `muP (Table 1, ...)`:
embedding multiplier, residual multiplier, init std / sqrt(m_width), attention logits / d_head, and (in
mup.py) lr / m_width for hidden matrices. With `use_mup=False` the same model is in standard
parametrisation: no multipliers, init_std everywhere, attention / sqrt(d_head).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from powersweep.proxy_models.head import head_loss, resolve_head
from powersweep.proxy_models.moe import MoEMLP
from powersweep.proxy_models.shapes import ProxyConfig


def rope_tables(seq_len: int, d_head: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables of rotary embeddings, each (T, d_head / 2)."""
    inv_freq = base ** (-torch.arange(0, d_head, 2, dtype=torch.float64) / d_head)
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float64), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (first half, second half) of x: (B, H, T, hd) by position."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)


class Attention(nn.Module):
    def __init__(self, cfg: ProxyConfig):
        super().__init__()
        self.n_heads, self.kv_heads, self.d_head = cfg.n_heads, cfg.kv_heads, cfg.d_head
        self.q = nn.Linear(cfg.d_model, cfg.n_heads * cfg.d_head, bias=False)
        self.kv = nn.Linear(cfg.d_model, 2 * cfg.kv_heads * cfg.d_head, bias=False)
        self.o = nn.Linear(cfg.n_heads * cfg.d_head, cfg.d_model, bias=False)
        # muP (Table 1, attention logit scaling): divide logits by d_head, not sqrt(d_head).
        self.scale = 1.0 / cfg.d_head if cfg.use_mup else 1.0 / math.sqrt(cfg.d_head)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q(x).view(B, T, self.n_heads, self.d_head).transpose(1, 2)  # (B, H, T, hd)
        k, v = self.kv(x).view(B, T, 2, self.kv_heads, self.d_head).permute(2, 0, 3, 1, 4)  # (B, Hkv, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=self.scale, enable_gqa=self.kv_heads != self.n_heads
        )  # (B, H, T, hd)
        return self.o(y.transpose(1, 2).reshape(B, T, -1))


class SwiGLU(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.w_in = nn.Linear(d_model, 2 * hidden, bias=False)  # [gate | up]
        self.w_out = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.w_in(x).chunk(2, dim=-1)
        return self.w_out(F.silu(gate) * up)


class Block(nn.Module):
    def __init__(self, cfg: ProxyConfig, *, moe_backend: str = "auto"):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.mlp_norm = nn.RMSNorm(cfg.d_model)
        if cfg.is_moe:
            self.mlp = MoEMLP(cfg.d_model, cfg.expert_hidden, cfg.n_experts, cfg.top_k, backend=moe_backend)
        else:
            self.mlp = SwiGLU(cfg.d_model, cfg.mlp_hidden)
        # muP (Table 1, residual multiplier): scale each branch output before the residual add.
        self.m_residual = cfg.m_residual if cfg.use_mup else 1.0

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.m_residual * self.attn(self.attn_norm(x), cos, sin)
        return x + self.m_residual * self.mlp(self.mlp_norm(x))


def run_block(block: Block, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """block(x, cos, sin), as a function of the block: what a reused compiled region wraps."""
    return block(x, cos, sin)


# A compiled trunk traces one dense block and reuses its code for every layer (torch's hierarchical
# compilation), so its cold compile does not grow with the layer count. An MoE block breaks the graph on the
# host (moe.py), which a reused region cannot hold: it is traced inline. In eager both are plain calls.
run_dense_block = torch.compiler.nested_compile_region(run_block)


class ProxyLM(nn.Module):
    """Decoder-only language model; `forward(idx, targets)` returns (logits, cross-entropy in nats/token).

    With targets the loss comes from the head path `head` (proxy_models/head.py): 'full' returns the
    logits too; 'chunked' and 'fused' never build them and return None in their place.
    `activation_checkpointing` keeps only each block's input for backward and recomputes the rest.
    """

    head = "auto"  # auto | full | chunked | fused
    head_chunk_tokens = 0  # tokens per chunk of the chunked head; 0 = 64 MiB of fp32 logits
    activation_checkpointing = False
    # `run_block` compiled, for every layer (proxy_models/compile_cache.py); None: eager
    compiled_block = None

    def __init__(self, cfg: ProxyConfig, *, moe_backend: str = "auto", head: str = "auto"):
        super().__init__()
        self.head = head
        if not cfg.tied_embeddings:
            raise ValueError(
                "tied_embeddings=False is not supported: the muP output rule assumes tied weights"
            )
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg, moe_backend=moe_backend) for _ in range(cfg.n_layers))
        self.norm = nn.RMSNorm(cfg.d_model)
        cos, sin = rope_tables(cfg.seq_len, cfg.d_head, cfg.rope_base)
        self.register_buffer("rope_cos", cos.float(), persistent=False)
        self.register_buffer("rope_sin", sin.float(), persistent=False)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # muP (Table 1, initialization std): hidden matrices init_std / sqrt(m_width); the embedding init_std.
        hidden_std = self.cfg.init_std / math.sqrt(self.cfg.m_width)
        for name, p in self.named_parameters():
            if p.ndim == 1:
                nn.init.ones_(p)  # norm gains
            else:
                nn.init.normal_(p, std=self.cfg.init_std if name == "wte.weight" else hidden_std)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        T = idx.shape[1]
        m_emb = self.cfg.m_emb if self.cfg.use_mup else 1.0
        x = self.wte(idx) * m_emb  # muP (Table 1, embedding multiplier). (B, T, d)
        cos, sin = self.rope_cos[:T].to(x.dtype), self.rope_sin[:T].to(x.dtype)
        h = self.norm(self.trunk(x, cos, sin))  # (B, T, d)
        # Tied output head scaled by 1 / m_width, as IBM's Granite/PowerLM models do under muP.
        scale = 1.0 / self.cfg.m_width
        if targets is None:
            return F.linear(h, self.wte.weight) / self.cfg.m_width, None  # (B, T, vocab)
        head = resolve_head(
            self.head, n_tokens=targets.numel(), vocab_size=self.cfg.vocab_size, device=h.device
        )
        if head == "full":
            logits = F.linear(h, self.wte.weight) / self.cfg.m_width  # (B, T, vocab)
            full = logits.flatten(0, 1).to(torch.promote_types(logits.dtype, torch.float32))  # bf16 -> fp32
            return logits, F.cross_entropy(full, targets.flatten())
        loss = head_loss(
            h.flatten(0, 1),
            self.wte.weight,
            targets.flatten(),
            scale=scale,
            head=head,
            chunk_tokens=self.head_chunk_tokens,
        )
        return None, loss

    def trunk(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The blocks in order, each checkpointed when asked (proxy_models/compile_cache.py compiles either
        the block function or this whole method)."""
        run = self.compiled_block or (run_block if self.cfg.is_moe else run_dense_block)
        for block in self.blocks:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(run, block, x, cos, sin, use_reentrant=False)
            else:
                x = run(block, x, cos, sin)
        return x

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE load-balancing losses of the last forward (0 for dense models)."""
        losses = [b.mlp.aux_loss for b in self.blocks if isinstance(b.mlp, MoEMLP)]
        return torch.stack(losses).sum() if losses else torch.zeros((), device=self.wte.weight.device)
