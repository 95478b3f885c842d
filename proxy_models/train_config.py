"""What one proxy run trains, as plain validated values: `TrainConfig` and its `DataConfig`. No torch here, so
a sweep can be planned (ids, steps, token budgets) without it; `proxy_models.trainer` trains a TrainConfig.

    config = TrainConfig(model="cpu-s", batch_size=16, tokens=2e6)
    config.steps, config.tokens_per_step   # 488 steps of 16 * 256 tokens
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError, ProxyConfig, get_preset

DTYPE_NAMES = (
    "float32",
    "float64",
    "bfloat16",
)  # TrainConfig.dtype besides "auto" (torch dtypes in the trainer)
HEADS = ("auto", "full", "chunked", "fused")  # output heads' losses (proxy_models/head.py)
# torch.compile's modes for compiled blocks; reduce-overhead replays the compiled kernels as CUDA graphs;
# auto: reduce-overhead for a solo dense run on CUDA whose step waits on the host, default elsewhere
# (proxy_models/compile_cache.py)
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
# Of them, those that replay the compiled code as CUDA graphs. Those cannot chain replays of one compiled
# block (block i's output overwritten by block i + 1's replay: pytorch/pytorch#152887): the trunk compiles
# whole.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")
COMPILE_SCOPES = (
    "auto",
    "blocks",
    "trunk",
)  # one graph per block, or the whole trunk; auto: trunk for CUDA graphs
CHECKPOINTING = ("auto", "on", "off")
# How a run executes, not what it trains: left out of a lineage's identity (sweeps/lineages.py).
EXECUTION_FIELDS = (
    "head",
    "activation_checkpointing",
    "memory_budget_gib",
    "compile",
    "compile_mode",
    "compile_scope",
)


class DataError(ConfigError):
    """A corpus cannot be loaded or cannot serve a batch;
    the message names the source, the counts and a fix."""


@dataclass(frozen=True)
class DataConfig:
    """Where the tokens come from and how many are held out for evaluation."""

    source: str = "embedded"  # "embedded", a text file/dir/glob, or a .bin token file
    # path to a tokenizer.json (Hugging Face tokenizers); None = bytes (vocab 256)
    tokenizer: str | None = None
    # share held out for evaluation: whole files by bytes, or the tail of one file
    eval_fraction: float = 0.05
    eval_tokens: int = 65_536  # size of the fixed eval set, in tokens
    max_bytes: int = 16_000_000  # cap on the embedded corpus, in bytes of source text

    def __post_init__(self) -> None:
        if not isinstance(self.source, str) or not self.source:
            raise DataError(
                f"source={self.source!r}: give 'embedded', a text file/dir/glob or a .bin token file"
            )
        if self.tokenizer is not None and (not isinstance(self.tokenizer, str) or not self.tokenizer):
            raise DataError(
                f"tokenizer={self.tokenizer!r}: give the path to a tokenizer.json, or None for bytes"
            )
        if not _is_number(self.eval_fraction) or not 0 < self.eval_fraction < 1:
            raise DataError(f"eval_fraction={self.eval_fraction!r}: must be a number in (0, 1), e.g. 0.05")
        for name in ("eval_tokens", "max_bytes"):
            require_int(name, getattr(self, name), minimum=1)


@dataclass(frozen=True)
class TrainConfig:
    """What to train for one proxy run. `model` is a preset name; `model_overrides` replace its fields."""

    model: str = "cpu-s"  # preset name (proxy_models.shapes.PRESETS)
    model_overrides: dict = field(default_factory=dict)  # e.g. {"seq_len": 128}
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # lr as a function of tokens seen
    batch_size: int = 16  # sequences per optimizer step (the paper's beta)
    tokens: float = 2e6  # training tokens T (rounded down to whole steps)
    seed: int = 0  # init and data order
    data: DataConfig = field(default_factory=DataConfig)  # corpus and eval set
    weight_decay: float = 0.1  # AdamW decoupled decay on matrices
    beta1: float = 0.9  # AdamW
    beta2: float = 0.95  # AdamW
    eps: float = 1e-8  # AdamW
    grad_clip: float = 1.0  # global gradient-norm clip; 0 disables
    micro_batch_size: int | str | None = None  # sequences per micro-batch; None: 'auto' on CUDA, else whole
    # batch; 'auto': the largest divisor of batch_size whose step fits the memory budget
    # (proxy_models/memory.py)
    divergence_factor: float = 2.0  # loss above factor * first-step loss (or non-finite) = diverged
    device: str = "auto"  # auto | cpu | cuda[:i]
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | float32 | float64 | bfloat16
    log_every_steps: int = 50  # progress line interval
    eval_batch_size: int = 32  # sequences per evaluation forward (does not change the eval set)
    moe_backend: str = "auto"  # auto | torch | scattermoe
    # torch.compile the blocks (the head's loss stays eager); auto: dense on CUDA, eager where compiling fails
    # on the machine (proxy_models/compile_cache.py, which also caches the compiled code on disk); see
    # RESULTS.md
    compile: str | bool = "auto"
    compile_mode: str = "auto"  # torch.compile's mode where blocks compile: one of COMPILE_MODES (auto: CUDA
    # graphs for a solo dense run on CUDA whose small micro-steps would otherwise wait on the host)
    # blocks (each its own graph, one compile for all) | trunk (all blocks one graph: fewer calls a step, a
    # longer cold compile) | auto (blocks; trunk under CUDA graphs)
    compile_scope: str = "auto"
    head: str = "auto"  # output head's loss: auto | full | chunked | fused (proxy_models/head.py)
    activation_checkpointing: str = "auto"  # auto (only when an auto micro-batch needs it to fit) | on | off
    memory_budget_gib: float | None = None  # memory one step may use, GiB; None = 90% of free CUDA memory

    def __post_init__(self) -> None:
        for name in ("batch_size", "tokens", "divergence_factor", "log_every_steps", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be positive")
        if self.dtype not in (*DTYPE_NAMES, "auto"):
            raise ConfigError(f"dtype={self.dtype!r}: choose one of {['auto', *DTYPE_NAMES]}")
        self._validate_execution()
        if self.steps < 1:
            raise ConfigError(
                f"tokens={self.tokens:g} is less than one step of batch_size * seq_len = "
                f"{self.tokens_per_step}"
            )
        self.schedule.validate(total_tokens=self.steps * self.tokens_per_step)

    def _validate_execution(self) -> None:
        micro = self.micro_batch_size
        if isinstance(micro, str) and micro != "auto":
            raise ConfigError(f"micro_batch_size={micro!r}: a positive integer, 'auto' or None")
        if isinstance(micro, int) and (micro <= 0 or self.batch_size % micro):
            raise ConfigError(f"micro_batch_size={micro} does not divide batch_size={self.batch_size}")
        if not (isinstance(self.compile, bool) or self.compile == "auto"):  # 1 and "true" are not bools
            raise ConfigError(
                f"compile={self.compile!r}: choose 'auto' (compile dense models on CUDA), true or false"
            )
        if self.compile_mode not in COMPILE_MODES:
            raise ConfigError(f"compile_mode={self.compile_mode!r}: choose one of {list(COMPILE_MODES)}")
        if self.compile_scope not in COMPILE_SCOPES:
            raise ConfigError(f"compile_scope={self.compile_scope!r}: choose one of {list(COMPILE_SCOPES)}")
        if self.compile_scope == "blocks" and self.compile_mode in CUDA_GRAPH_MODES:
            raise ConfigError(
                f"compile_scope='blocks' with compile_mode={self.compile_mode!r}: CUDA graphs cannot "
                "chain one compiled block's replays; use compile_scope 'trunk' or 'auto'"
            )
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r}: choose one of {list(HEADS)}")
        if self.activation_checkpointing not in CHECKPOINTING:
            raise ConfigError(
                f"activation_checkpointing={self.activation_checkpointing!r}: choose one of "
                f"{list(CHECKPOINTING)}"
            )
        if self.memory_budget_gib is not None and self.memory_budget_gib <= 0:
            raise ConfigError(f"memory_budget_gib={self.memory_budget_gib!r}: must be positive (GiB)")

    @property
    def proxy(self) -> ProxyConfig:
        return get_preset(self.model, **self.model_overrides)

    @property
    def tokens_per_step(self) -> int:
        # Read every step: look seq_len up rather than building the whole ProxyConfig.
        seq_len = self.model_overrides.get("seq_len") or get_preset(self.model).seq_len
        return self.batch_size * seq_len

    @property
    def steps(self) -> int:
        return int(self.tokens // self.tokens_per_step)


def require_int(name: str, value, *, minimum: int) -> None:
    """DataError unless `value` is an integer (numpy's too, never a bool) of at least `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{name}={value!r}: must be an integer >= {minimum}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
