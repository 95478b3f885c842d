"""Packed variants: K runs that differ only in their schedule
(lr, or Power a and b) and seed, trained in lockstep.

Every parameter of the K models lives in one (K, P) buffer, a row per variant, in ProxyLM's order: the
embedding, each block's weights side by side (a layer's columns, laid out by `BlockSpec`), the final norm.
The forward applies the variants' weights as batched matrix products: (K, N, d_in) @ (K, d_in, d_out), one
bmm per weight for all K. Attention folds the variants into SDPA's batch dimension ((K * B, H, T, d_head):
flash or memory-efficient attention, no (T, T) scores), and the output head is the memory-lean head of
proxy_models/head.py, once per variant. AdamW is one set of elementwise ops over the (K, P) buffers, with
the per-variant lr as a (K, 1) column and the muP multipliers as a (P,) row (proxy_models/mup.py).

Each variant has its own initial weights and batches (its seed's, as its solo run), lr, gradient clipping and
divergence mask: the mask is updated on the device from every step's losses (no host sync), so a diverged
variant stops updating at once and cannot disturb the others, since no computation mixes variants. The block
is compiled where a solo run's blocks are (`compile: auto`: on CUDA), one compiled function for every layer,
or the trunk as one (`compile_scope`), which traces one block and reuses its code for every layer.
The loop itself (micro-batches, out-of-memory halving, the loss watch, evaluation, rows, checkpoints) is the
solo run's (proxy_models/loop.py); `PackedEngine` is its model side (proxy_models/engine.py).

The block here is proxy_models/model.py's Block written again over stacked weights: a second copy of its
computation (RMSNorm, RoPE attention with grouped-query heads, SwiGLU, the muP multipliers), kept because a
module's forward cannot take K weights at once. Every change to the model's block is made in both;
tests/proxy_models/test_packed.py checks, for every block option, that each variant's loss and gradients are
those of a ProxyLM holding its weights.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import ClassVar, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from powersweep.proxy_models.compile_cache import compile_function, whole_trunk
from powersweep.proxy_models.data import TokenCorpus
from powersweep.proxy_models.head import full_losses, head_loss, resolve_head
from powersweep.proxy_models.loop import TrainingLoop
from powersweep.proxy_models.model import ProxyLM, apply_rope
from powersweep.proxy_models.mup import multipliers
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError, ProxyConfig
from powersweep.proxy_models.train_config import TrainConfig
from powersweep.rows import RunResult


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Each variant's x @ W.T as one batched matmul:
    x (K, N, d_in), weight (K, d_out, d_in) -> (K, N, d_out)."""
    return torch.bmm(x, weight.transpose(1, 2))


def _rms_norm(x: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """nn.RMSNorm with each variant's gain: x (K, N, d), gain (K, d)."""
    return F.rms_norm(x, (x.shape[-1],)) * gain[:, None, :]


class BlockSpec(NamedTuple):
    """What a packed block needs of the model: its settings and where its weights sit in a layer's
    (K, P_layer) columns. Plain constants: a compiled trunk reuses one block's code for every layer only when
    the block's inputs are tensors and constants."""

    n_heads: int
    kv_heads: int
    d_head: int
    attention_scale: float  # muP (Table 1, attention logit scaling): 1 / d_head, not 1 / sqrt(d_head)
    m_residual: float  # muP (Table 1, residual multiplier)
    layout: tuple[tuple[str, tuple[int, ...]], ...]  # (short name, shape) of each weight, in ProxyLM's order


def block_spec(cfg: ProxyConfig, block: torch.nn.Module) -> BlockSpec:
    """The BlockSpec of a ProxyLM block of `cfg`, its weights (attn_norm, q, kv, o, mlp_norm, w_in, w_out) in
    the order the block holds them."""
    return BlockSpec(
        cfg.n_heads,
        cfg.kv_heads,
        cfg.d_head,
        1.0 / cfg.d_head if cfg.use_mup else 1.0 / math.sqrt(cfg.d_head),
        cfg.m_residual if cfg.use_mup else 1.0,
        tuple((name.split(".")[-2], tuple(p.shape)) for name, p in block.named_parameters()),
    )


def unpack_layer(layer: torch.Tensor, spec: BlockSpec) -> dict[str, torch.Tensor]:
    """A layer's (K, P_layer) columns as each weight's (K, *shape) view."""
    views, start = {}, 0
    for name, shape in spec.layout:
        size = math.prod(shape)
        views[name] = layer[:, start : start + size].view(layer.shape[0], *shape)
        start += size
    return views


def _attention(
    x: torch.Tensor, p: dict[str, torch.Tensor], spec: BlockSpec, cos, sin, batch: int
) -> torch.Tensor:
    """Causal RoPE attention of every variant at once: x (K, B * T, d) -> (K, B * T, d)."""
    k_variants, T = x.shape[0], x.shape[1] // batch
    # (K*B, H, T, hd)
    q = _linear(x, p["q"]).view(k_variants * batch, T, spec.n_heads, spec.d_head).transpose(1, 2)
    k, v = (
        _linear(x, p["kv"]).view(k_variants * batch, T, 2, spec.kv_heads, spec.d_head).permute(2, 0, 3, 1, 4)
    )
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(
        q, k, v, is_causal=True, scale=spec.attention_scale, enable_gqa=spec.kv_heads != spec.n_heads
    )  # (K*B, H, T, hd)
    return _linear(y.transpose(1, 2).reshape(k_variants, batch * T, -1), p["o"])


def _block(x: torch.Tensor, layer: torch.Tensor, spec: BlockSpec, cos, sin, batch: int) -> torch.Tensor:
    """One pre-norm block (proxy_models/model.py's Block) of every variant: x (K, B * T, d); `layer` holds the
    block's weights, (K, P_layer) as `spec` lays them out."""
    p = unpack_layer(layer, spec)  # views made inside the block: the inputs of a reused block may not alias
    # muP (Table 1, residual multiplier): scale each branch output before the residual add.
    x = x + spec.m_residual * _attention(_rms_norm(x, p["attn_norm"]), p, spec, cos, sin, batch)
    gate, up = _linear(_rms_norm(x, p["mlp_norm"]), p["w_in"]).chunk(2, dim=-1)  # [gate | up]
    return x + spec.m_residual * _linear(F.silu(gate) * up, p["w_out"])


# A compiled trunk traces one block and reuses its code for every layer, as a solo run's does (model.py); a
# block compiled alone is `_block` itself. In eager both are plain calls.
_reused_block = torch.compiler.nested_compile_region(_block)


@functools.cache
def compiled_trunk(mode: str = "default", scope: str = "auto") -> Callable:
    """`_trunk` with `_block` compiled once per process and mode, shared by every PackedTrainer and layer, or
    the whole trunk compiled (`whole_trunk`, proxy_models/compile_cache.py)."""
    if whole_trunk(mode, scope):
        return compile_function(_trunk, mode=mode)
    return functools.partial(_trunk, block=compile_function(_block, mode=mode))


def _trunk(
    x: torch.Tensor,
    layers: Sequence[torch.Tensor],
    spec: BlockSpec,
    cos,
    sin,
    batch: int,
    checkpointing: bool,
    block: Callable = _reused_block,
) -> torch.Tensor:
    """Every block in order (checkpointed when asked), `block` being `_reused_block` or `_block` compiled."""
    for layer in layers:
        if checkpointing and torch.is_grad_enabled():
            x = checkpoint(block, x, layer, spec, cos, sin, batch, use_reentrant=False)
        else:
            x = block(x, layer, spec, cos, sin, batch)
    return x


def packed_hidden(
    wte: torch.Tensor,
    layers: Sequence[torch.Tensor],
    norm: torch.Tensor,
    spec: BlockSpec,
    idx: torch.Tensor,
    cfg: ProxyConfig,
    rope: tuple[torch.Tensor, torch.Tensor],
    *,
    checkpointing: bool = False,
    trunk: Callable = _trunk,
) -> torch.Tensor:
    """The final norm's output of every variant, (K, B * T, d), for tokens idx (B, T) shared by all or
    (K, B, T) a batch per variant: `wte` (K, V, d), each block's weights (K, P_layer) as `spec` lays them out,
    the final norm's gains (K, d), all stacked on a variant dimension; `trunk` is `_trunk` or a compiled
    form."""
    k_variants, vocab = wte.shape[0], wte.shape[1]
    offsets = torch.arange(k_variants, device=idx.device)[:, None] * vocab
    tokens = idx.reshape(k_variants, -1) if idx.dim() == 3 else idx.flatten()[None]  # (K or 1, B*T)
    # Variant k's rows of the stacked table start at k * V.
    x = F.embedding(tokens + offsets, wte.reshape(-1, wte.shape[-1]))  # (K, B*T, d)
    x = x * (cfg.m_emb if cfg.use_mup else 1.0)  # muP (Table 1, embedding multiplier)
    T, batch = idx.shape[-1], idx.shape[-2]
    cos, sin = rope[0][:T].to(x.dtype), rope[1][:T].to(x.dtype)
    return _rms_norm(trunk(x, layers, spec, cos, sin, batch, checkpointing), norm)


class PackedEngine:
    """K variants of one model in a (K, P) buffer, trained by one batched forward and one AdamW: the Engine of
    packed variants. Variant i starts from seeds[i]'s initial weights, as its solo run does."""

    packed: ClassVar[bool] = True

    def __init__(
        self, config: TrainConfig, *, device: torch.device, param_dtype: torch.dtype, seeds: Sequence[int]
    ):
        self.cfg, self.proxy, self.device, self.k = config, config.proxy, device, len(seeds)
        rows = {}  # every variant starts from its solo run's initial weights: one model per seed
        for seed in dict.fromkeys(seeds):
            torch.manual_seed(seed)
            skeleton = ProxyLM(self.proxy).to(device, param_dtype)
            rows[seed] = torch.cat([p.detach().flatten() for p in skeleton.parameters()])
        self.rope = (skeleton.rope_cos, skeleton.rope_sin)
        named = dict(skeleton.named_parameters())
        sizes = [p.numel() for p in named.values()]
        self.flat = torch.stack([rows[seed] for seed in seeds])  # (K, P)
        del rows
        self.params = {
            name: self.flat[:, start : start + p.numel()].view(self.k, *p.shape)  # (K, *shape) views
            for (name, p), start in zip(named.items(), _offsets(sizes))
        }
        # The autograd leaves: views of self.flat's columns for the embedding, each block (its weights side by
        # side, as `spec` lays them out) and the final norm, in that order, as ProxyLM keeps its parameters.
        self.spec = block_spec(self.proxy, skeleton.blocks[0])
        layer_size = sum(math.prod(shape) for _, shape in self.spec.layout)
        columns = [sizes[0], *[layer_size] * self.proxy.n_layers, sizes[-1]]
        self.leaves = [self.flat[:, s : s + n].requires_grad_() for s, n in zip(_offsets(columns), columns)]
        self.grad, self.m, self.v = (torch.zeros_like(self.flat) for _ in range(3))
        self.grads = [self.grad[:, s : s + n] for s, n in zip(_offsets(columns), columns)]
        mults = multipliers(skeleton, m_width=self.proxy.m_width, weight_decay=config.weight_decay)
        self.lr_scale = _row([mults[n].lr_scale for n in named], sizes, self.flat)  # (P,) muP lr multipliers
        self.decay = _row([mults[n].lr_scale * mults[n].weight_decay for n in named], sizes, self.flat)
        self.active = torch.ones(self.k, dtype=torch.bool, device=device)  # not diverged, on the device
        self.first_device = torch.full((self.k,), math.nan, dtype=torch.float64, device=device)
        self.lrs = torch.zeros(self.k, dtype=param_dtype, device=device)
        self.checkpointing = False
        self.trunk = _trunk  # or compiled (`compile`): one compiled block serves every layer

    def step_lrs(self, lrs: list[float]) -> torch.Tensor:
        """The K variants' lrs, (K,) on the device (copied without waiting for it)."""
        lrs = torch.tensor(lrs, dtype=self.lrs.dtype)
        return lrs.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else lrs

    def set_lr(self, lrs: torch.Tensor) -> None:
        self.lrs = lrs

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each variant's mean cross-entropy (nats/token) on tokens x, targets y: (B, T) shared by all
        variants or (K, B, T) a batch each. Returns (K,)."""
        wte, *layers, norm = self.leaves
        wte = wte.view(self.params["wte.weight"].shape)
        targets = y.reshape(self.k, -1) if y.dim() == 3 else y.flatten().expand(self.k, -1)  # (K, B*T)
        h = packed_hidden(
            wte,
            layers,
            norm,
            self.spec,
            x,
            self.proxy,
            self.rope,
            checkpointing=self.checkpointing,
            trunk=self.trunk,
        )
        head = resolve_head(
            self.cfg.head, n_tokens=targets.shape[1], vocab_size=self.proxy.vocab_size, device=self.device
        )
        # Tied output head scaled by 1 / m_width (muP): all variants at once where the logits are small,
        # else each variant through the memory-lean head.
        scale = 1.0 / self.proxy.m_width
        if head == "full":
            return full_losses(h, wte, targets, scale=scale)
        return torch.stack(
            [head_loss(h[i], wte[i], targets[i], scale=scale, head=head) for i in range(self.k)]
        )

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        losses = self.losses(x, y)
        return losses, losses

    def backward(self, objective: torch.Tensor) -> None:
        """Add the gradients into the (K, P) gradient buffer (micro-batches accumulate there)."""
        grads = torch.autograd.grad(objective, self.leaves)
        torch._foreach_add_(self.grads, grads)

    @torch.no_grad()
    def update(self, losses: torch.Tensor, *, step: int) -> None:
        """Mask variants whose loss diverged, then AdamW as torch.optim.AdamW computes it, after per-variant
        gradient clipping, over all variants at once."""
        cfg, t = self.cfg, step + 1
        self._mask_diverged(losses)
        # (K,): each variant's global gradient norm, as clip_grad_norm_ takes it
        norms = self.grad.norm(dim=1)
        coef = (
            (cfg.grad_clip / (norms + 1e-6)).clamp(max=1.0) if cfg.grad_clip > 0 else torch.ones_like(norms)
        )
        coef = torch.where(self.active, coef, 0.0)[:, None]
        g = self.grad.nan_to_num_().mul_(coef)
        lr = (self.lrs * self.active)[:, None]  # (K, 1); a diverged variant's lr is 0
        self.flat.mul_(1 - lr * self.decay)
        self.m.lerp_(g, 1 - cfg.beta1)
        self.v.mul_(cfg.beta2).addcmul_(g, g, value=1 - cfg.beta2)
        denom = (self.v.sqrt() / math.sqrt(1 - cfg.beta2**t)).add_(cfg.eps)
        self.flat.addcdiv_(self.m * (lr * self.lr_scale / (1 - cfg.beta1**t)), denom, value=-1.0)

    def _mask_diverged(self, losses: torch.Tensor) -> None:
        """The loop's divergence rule (TrainingLoop._watch) on the device: no host sync."""
        self.first_device = torch.where(torch.isnan(self.first_device), losses, self.first_device)
        bad = ~torch.isfinite(losses) | (losses > self.cfg.divergence_factor * self.first_device)
        self.active &= ~bad

    def zero_grad(self) -> None:
        self.grad.zero_()

    def eval_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.losses(x, y)

    def eval_mode(self, on: bool) -> None:
        """No dropout or other train/eval difference in the proxy model."""

    def compile(self, mode: str, scope: str) -> None:
        self.trunk = compiled_trunk(mode, scope)

    def uncompile(self) -> None:
        self.trunk = _trunk

    def model_state(self) -> dict:
        return {"params": self.flat, "m": self.m, "v": self.v}

    @torch.no_grad()
    def load_model_state(self, state: dict) -> None:
        for mine, saved in ((self.flat, "params"), (self.m, "m"), (self.v, "v")):
            mine.copy_(state[saved])  # in place: the parameter views stay the autograd leaves
        self.active = torch.tensor([math.isnan(d) for d in state["diverged_at"]], device=self.device)
        self.first_device = torch.tensor(state["first_loss"], dtype=torch.float64, device=self.device)


class PackedTrainer(TrainingLoop):
    """Trains `len(schedules)` variants of `config` at once, variant i under schedules[i] and seeds[i]
    (default: config.seed for all); `results()` gives one RunResult each."""

    def __init__(
        self,
        config: TrainConfig,
        schedules: Sequence[ScheduleConfig],
        *,
        seeds: Sequence[int] | None = None,
        corpus: TokenCorpus | None = None,
    ):
        if config.proxy.is_moe:
            raise ConfigError(
                f"model={config.model!r} is a mixture of experts: packing supports dense models; "
                "use pack=1 (run.pack: 1) for MoE"
            )
        super().__init__(
            replace(config, schedule=schedules[0], seed=config.seed if seeds is None else seeds[0]),
            schedules,
            PackedEngine,
            seeds=seeds,
            corpus=corpus,
            log=None,
        )

    def train_and_results(self) -> list[RunResult]:
        self.train()
        return self.results()

    def results(self, *, tokens: float | None = None) -> list[RunResult]:
        """One row per variant for the budget `tokens` (default the configured one)."""
        return super().results(tokens=self.cfg.tokens if tokens is None else tokens)

    def variant_state(self, i: int) -> dict[str, torch.Tensor]:
        """Variant i's weights under ProxyLM's parameter names (copies): e.g. to load into a solo model."""
        return {name: p[i].detach().clone() for name, p in self.engine.params.items()}


def _offsets(sizes: list[int]) -> list[int]:
    """Where each parameter starts in a variant's row."""
    return [sum(sizes[:i]) for i in range(len(sizes))]


def _row(values: list[float], sizes: list[int], like: torch.Tensor) -> torch.Tensor:
    """One value per parameter spread over its elements: (P,)."""
    return torch.cat(
        [torch.full((n,), v, dtype=like.dtype, device=like.device) for v, n in zip(values, sizes)]
    )
