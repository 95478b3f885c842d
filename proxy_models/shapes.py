"""Proxy model shapes: `ProxyConfig`, the named presets, and parameter counts.

Paper shapes come from the Power Scheduler paper (Shen et al., arXiv 2408.13359): Table 2 (the 12M, 36M and
121M sweep models), Table 3 (the muP multipliers of the Power search) and Table 4 (1B and 3B models).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

PAPER_VOCAB = 49152  # the paper's tokenizer (StarCoder vocabulary)
BYTE_VOCAB = 256


class ConfigError(ValueError):
    """A user-supplied configuration value is invalid; the message names the field, value and fix."""


@dataclass(frozen=True)
class ProxyConfig:
    """Shape and muP multipliers of one proxy transformer (pre-norm, RoPE, SwiGLU, tied embeddings)."""

    vocab_size: int = BYTE_VOCAB  # tokens in the vocabulary
    d_model: int = 128  # embedding size (the paper's d_m)
    n_layers: int = 4  # transformer blocks
    n_heads: int = 4  # query heads
    n_kv_heads: int | None = None  # key/value heads (grouped-query attention); None = n_heads
    d_head: int = 32  # size of one attention head
    mlp_hidden: int = 320  # SwiGLU hidden size of the dense MLP
    activation: str = "swiglu"  # MLP activation; only SwiGLU is implemented
    tied_embeddings: bool = True  # output head reuses the input embedding matrix
    seq_len: int = 256  # training context in tokens
    d_base: int = 128  # muP base width: m_width = d_model / d_base
    m_emb: float = 1.0  # muP embedding multiplier (Table 1)
    m_residual: float = 1.0  # muP residual-branch multiplier (Table 1)
    init_std: float = 0.02  # base init std; hidden matrices use init_std / sqrt(m_width)
    use_mup: bool = True  # False = standard parametrisation, for comparison
    n_experts: int = 0  # 0 = dense MLP; > 0 = mixture of experts in every block
    top_k: int = 0  # experts per token
    expert_hidden: int = 0  # SwiGLU hidden size of one expert
    router_aux_loss: float = 0.01  # load-balancing loss weight (MoE only)
    rope_base: float = 10000.0  # rotary embedding base

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "d_head", "seq_len", "d_base"):
            _require_positive(name, getattr(self, name))
        if self.activation != "swiglu":
            raise ConfigError(f"activation={self.activation!r}: only 'swiglu' is supported")
        if self.n_heads % self.kv_heads:
            raise ConfigError(
                f"n_kv_heads={self.n_kv_heads} does not divide n_heads={self.n_heads}: "
                "pick a divisor of n_heads"
            )
        for name in ("m_emb", "m_residual", "init_std", "rope_base"):
            _require_positive(name, getattr(self, name))
        if self.is_moe:
            for name in ("top_k", "expert_hidden"):
                _require_positive(name, getattr(self, name))
            if self.top_k > self.n_experts:
                raise ConfigError(
                    f"top_k={self.top_k} > n_experts={self.n_experts}: top_k must be <= n_experts"
                )
        else:
            _require_positive("mlp_hidden", self.mlp_hidden)

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def m_width(self) -> float:
        """muP width multiplier d_model / d_base (Table 1); 1 under standard parametrisation."""
        return self.d_model / self.d_base if self.use_mup else 1.0

    def num_params(self, *, active: bool = False, embedding: bool = True) -> int:
        """Parameter count from the shapes alone (no weights are allocated).

        active=True counts only the top_k experts a token passes through (MoE). embedding=False leaves out
        the embedding matrix; the paper's active counts for its MoE models (377M, 800M) are of that kind.
        """
        attn = self.d_model * self.d_head * (2 * self.n_heads + 2 * self.kv_heads)  # q, o and k, v
        if self.is_moe:
            experts = self.top_k if active else self.n_experts
            mlp = experts * 3 * self.d_model * self.expert_hidden + self.d_model * self.n_experts  # + router
        else:
            mlp = 3 * self.d_model * self.mlp_hidden
        norms = 2 * self.d_model
        body = self.n_layers * (attn + mlp + norms) + self.d_model  # + final norm
        emb = self.vocab_size * self.d_model * (1 if self.tied_embeddings else 2)
        return body + (emb if embedding else 0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ProxyConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model field(s) {unknown}: known fields are {sorted(known)}")
        return cls(**values)


def _require_positive(name: str, value) -> None:
    if value is None or value <= 0:
        raise ConfigError(f"{name}={value!r}: must be positive")


def _paper_table2(d_model: int, n_heads: int, mlp_hidden: int) -> ProxyConfig:
    # Table 2: 32 layers, head size 64, init std 0.02, m_emb = m_residual = 1, m_width = d_model / 256.
    return ProxyConfig(
        vocab_size=PAPER_VOCAB,
        d_model=d_model,
        n_layers=32,
        n_heads=n_heads,
        d_head=64,
        mlp_hidden=mlp_hidden,
        seq_len=4096,
        d_base=256,
        init_std=0.02,
    )


def _paper_table4(
    d_model: int, n_layers: int, n_heads: int, n_kv_heads: int, m_residual: float, **mlp
) -> ProxyConfig:
    # Table 4: head size 64, init std 0.1, m_emb 12, d_base 256 (m_width 6 for d_model 1536, 4 for 1024).
    return ProxyConfig(
        vocab_size=PAPER_VOCAB,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_head=64,
        seq_len=4096,
        d_base=256,
        init_std=0.1,
        m_emb=12.0,
        m_residual=m_residual,
        **mlp,
    )


def _cpu(d_model: int) -> ProxyConfig:
    # CPU presets differ only in width (head size fixed), so they form a muP width ladder around d_base 128.
    return ProxyConfig(d_model=d_model, n_heads=d_model // 32, mlp_hidden=d_model * 5 // 2)


PRESETS: dict[str, ProxyConfig] = {
    "paper-12m": _paper_table2(128, 2, 320),
    "paper-36m": _paper_table2(256, 4, 640),
    "paper-121m": _paper_table2(512, 8, 1280),
    # Table 3: the Power (a, b) search model: the 36M shape with init std 0.1, m_emb 12, m_residual 0.26.
    "paper-36m-power": replace(_paper_table2(256, 4, 640), init_std=0.1, m_emb=12.0, m_residual=0.26),
    "paper-1b-dense": _paper_table4(1536, 40, 24, 24, 0.22, mlp_hidden=4096),
    "paper-1b-moe": _paper_table4(1024, 24, 16, 8, 0.28, n_experts=32, top_k=8, expert_hidden=512),
    # Table 4 lists m_width 8 for PowerLM-3B, but 2304 / 256 = 9; we keep d_base 256 for every preset.
    "powerlm-3b": _paper_table4(2304, 40, 36, 36, 0.22, mlp_hidden=9216),
    "powermoe-3b": _paper_table4(1536, 32, 24, 8, 0.22, n_experts=40, top_k=8, expert_hidden=512),
    # The main job's model: so small (32K parameters) that a CPU sweep reaches thousands of steps and tens of
    # tokens per parameter in minutes, where lr_opt is set by training noise, as in the paper's runs.
    "cpu-xxs": replace(_cpu(32), n_layers=2),
    "cpu-xs": _cpu(64),
    "cpu-s": _cpu(128),
    "cpu-m": _cpu(256),
    "cpu-moe": replace(_cpu(128), n_experts=8, top_k=2, expert_hidden=128),
}

# What the paper reports for each preset (Tables 2 and 4), used by tests and `powersweep presets`.
PAPER_PARAMS: dict[str, dict[str, float]] = {
    "paper-12m": {"total": 12e6},
    "paper-36m": {"total": 36e6},
    "paper-121m": {"total": 121e6},
    "paper-1b-dense": {"total": 1.2e9},
    "paper-1b-moe": {"total": 1.3e9, "active": 377e6},
    "powerlm-3b": {"total": 3.5e9},
    "powermoe-3b": {"total": 3.3e9, "active": 800e6},
}


def get_preset(name: str, **overrides) -> ProxyConfig:
    """The preset `name`, with fields replaced by `overrides` (e.g. seq_len=512)."""
    if name not in PRESETS:
        raise ConfigError(f"model={name!r}: unknown preset; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides) if overrides else PRESETS[name]
