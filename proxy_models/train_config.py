"""What one proxy run trains, as plain validated values: `TrainConfig` and its `DataConfig`. No torch here, so
a sweep can be planned (ids, steps, token budgets) without it; `proxy_models.trainer` trains a TrainConfig.

    config = TrainConfig(model="cpu-s", batch_size=16, tokens=2e6)
    config.steps, config.tokens_per_step   # 488 steps of 16 * 256 tokens
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.settings import (
    RUN,
    CompileChoice,
    Flag,
    Fraction,
    ModelOverrides,
    NonNegative,
    NonNegativeInt,
    Positive,
    PositiveInt,
    at_least,
    check_settings,
    number,
    spec_setting,
)
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


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("give a non-empty string (a path, or 'embedded' for a source)")
    return value


def _source(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        if not value or not all(isinstance(item, str) and item for item in value):
            raise ValueError("a list of paths must hold at least one, each a non-empty string")
        return tuple(value)
    return _text(value)


def _open_fraction(value: float) -> float:
    if not 0 < value < 1:
        raise ValueError("must be a number in (0, 1), e.g. 0.05")
    return value


def _micro_batch_size(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value > 0):
        return value
    raise ValueError("a positive integer, 'auto' or None")


Text = Annotated[str, BeforeValidator(_text)]
Source = Annotated[str | tuple[str, ...], BeforeValidator(_source)]
EvalFraction = Annotated[float, BeforeValidator(number), AfterValidator(_open_fraction)]
MicroBatchSize = Annotated[int | str, BeforeValidator(_micro_batch_size)]
Factor = Annotated[float, BeforeValidator(number), at_least(1, what="factor")]


@dataclass(frozen=True)
class DataConfig:
    """Where the tokens come from and how many are held out for evaluation."""

    # "embedded", a text file/dir/glob, a .bin token file, or token shards: llm.c .bin or .npy files as one
    # file, a list, a glob or a directory (proxy_models/token_files.py)
    source: Source = spec_setting("embedded")
    tokenizer: Text | None = spec_setting(None)  # a tokenizer.json (Hugging Face tokenizers); None: bytes
    # share held out for evaluation: whole files by bytes, or the tail of one file
    eval_fraction: EvalFraction = 0.05
    eval_tokens: PositiveInt = spec_setting(65_536)  # size of the fixed held-out set, in tokens
    max_bytes: PositiveInt = 16_000_000  # cap on the embedded corpus, in bytes of source text
    # token shards held out for evaluation (a file, list or glob: llm.c's fineweb_val_*.bin); never any of
    # source's. None: shards held out by eval_fraction of the tokens, or one shard's tail
    eval_source: Source | None = spec_setting(None, in_ids="when set")
    # token shards: whether a run may read its train split more than once (a budget above its tokens)
    repeat: Flag = spec_setting(False, in_ids="when set")
    # a text dataset's column of documents (Parquet, JSON Lines, a datasets folder: proxy_models/prepared.py)
    text_column: Text = spec_setting("text", in_ids="when set")

    def __post_init__(self) -> None:
        check_settings(self, error=DataError)


@dataclass(frozen=True)
class TrainConfig:
    """What to train for one proxy run. `model` is a preset name; `model_overrides` replace its fields.
    Fields marked `spec_setting` are the spec's `train:` (and `run:`) settings (proxy_models/settings.py)."""

    model: str = "cpu-s"  # preset name (proxy_models.shapes.PRESETS)
    # other ProxyConfig fields of the preset, e.g. {"seq_len": 128}
    model_overrides: ModelOverrides = spec_setting(default_factory=dict)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # lr as a function of tokens seen
    batch_size: PositiveInt = 16  # sequences per optimizer step (the paper's beta)
    tokens: Positive = 2e6  # training tokens T (rounded down to whole steps)
    seed: NonNegativeInt = 0  # init and data order
    data: DataConfig = spec_setting(default_factory=DataConfig)  # corpus and held-out set
    weight_decay: NonNegative = spec_setting(0.1)  # AdamW decoupled decay on matrices
    beta1: Fraction = spec_setting(0.9)  # AdamW, in [0, 1)
    beta2: Fraction = spec_setting(0.95)  # AdamW, in [0, 1)
    eps: Positive = spec_setting(1e-8)  # AdamW
    grad_clip: NonNegative = spec_setting(1.0)  # global gradient-norm clip; 0 disables
    # sequences per micro-batch; None: 'auto' on CUDA, else the whole batch; 'auto': the largest divisor of
    # batch_size whose step fits the memory budget (proxy_models/memory.py)
    micro_batch_size: MicroBatchSize | None = None
    # loss above factor * first-step loss (or non-finite) = diverged
    divergence_factor: Factor = spec_setting(2.0)
    device: str = "auto"  # auto | cpu | cuda[:i]
    # auto: bf16 autocast on CUDA, float32 elsewhere
    dtype: Literal["auto", "float32", "float64", "bfloat16"] = spec_setting("auto")
    log_every_steps: PositiveInt = 50  # progress line interval
    eval_batch_size: PositiveInt = 32  # sequences per evaluation forward (does not change the eval set)
    moe_backend: str = "auto"  # auto | torch | scattermoe
    # torch.compile the blocks (the head's loss stays eager): auto (dense models on CUDA; eager where
    # compiling fails on the machine, proxy_models/compile_cache.py, which also caches the compiled code on
    # disk) | true | false; how a run executes, not what it trains: no id depends on it
    compile: CompileChoice = spec_setting("auto", RUN)
    # torch.compile's mode where blocks compile; reduce-overhead replays the trunk as CUDA graphs (fewer host
    # launches for small models); auto: that for solo dense runs on CUDA whose step waits on the host (small
    # micro-steps), default elsewhere; not part of any id either
    compile_mode: Literal[COMPILE_MODES] = spec_setting("auto", RUN)
    # blocks (each its own graph, one compile for all) | trunk (all blocks one graph: fewer calls a step, a
    # longer cold compile) | auto (blocks; trunk with reduce-overhead or max-autotune, whose CUDA graphs
    # cannot chain one block's replays)
    compile_scope: Literal[COMPILE_SCOPES] = spec_setting("auto", RUN)
    head: Literal[HEADS] = "auto"  # output head's loss: auto | full | chunked | fused (proxy_models/head.py)
    # auto (only when an auto micro-batch needs it to fit) | on | off
    activation_checkpointing: Literal[CHECKPOINTING] = "auto"
    memory_budget_gib: Positive | None = None  # memory one step may use, GiB; None = 90% of free CUDA memory

    def __post_init__(self) -> None:
        check_settings(self)
        self._validate_execution()
        if self.steps < 1:
            raise ConfigError(
                f"tokens={self.tokens:g} is less than one step of batch_size * seq_len = "
                f"{self.tokens_per_step}"
            )
        self.schedule.validate(total_tokens=self.steps * self.tokens_per_step)

    def _validate_execution(self) -> None:
        micro = self.micro_batch_size
        if isinstance(micro, int) and self.batch_size % micro:
            raise ConfigError(f"micro_batch_size={micro} does not divide batch_size={self.batch_size}")
        if self.compile_scope == "blocks" and self.compile_mode in CUDA_GRAPH_MODES:
            raise ConfigError(
                f"compile_scope='blocks' with compile_mode={self.compile_mode!r}: CUDA graphs cannot "
                "chain one compiled block's replays; use compile_scope 'trunk' or 'auto'"
            )

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
