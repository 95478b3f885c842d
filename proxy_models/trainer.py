"""One proxy run: AdamW with muP groups, a schedule of tokens seen, divergence detection, checkpoints.

Batch k is a pure function of (seed, k) and the lr of step k a pure function of the tokens seen, so the
whole training state is (model, optimizer, step): a checkpoint restores a run exactly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch

from proxy_models.config import ConfigError, ProxyConfig, get_preset
from proxy_models.curves import CurveRecorder
from proxy_models.data import DataConfig, TokenCorpus, eval_batches, load_corpus, train_batch
from proxy_models.head import HEADS, resolve_head
from proxy_models.memory import GIB, USABLE_FRACTION, choose_micro_batch, divisors_descending
from proxy_models.model import ProxyLM
from proxy_models.mup import param_groups, set_lr
from proxy_models.perf import (
    attention_flops_per_token,
    compute_dtype,
    device_name,
    mfu,
    peak_flops,
    resolve_device,
    utilisation,
)
from proxy_models.schedules import ScheduleConfig

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
CHECKPOINTING = ("auto", "on", "off")
# How a run executes, not what it trains: left out of a lineage's identity (sweeps/plan.py).
EXECUTION_FIELDS = ("head", "activation_checkpointing", "memory_budget_gib")
CUDA_CHECK_EVERY_STEPS = 16  # on CUDA, losses stay on the device and are read (one sync) every this many steps


@dataclass(frozen=True)
class TrainConfig:
    """What to train for one proxy run. `model` is a preset name; `model_overrides` replace its fields."""

    model: str = "cpu-s"  # preset name (proxy_models.config.PRESETS)
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
    # batch; 'auto': the largest divisor of batch_size whose step fits the memory budget (proxy_models/memory.py)
    divergence_factor: float = 2.0  # loss above factor * first-step loss (or non-finite) = diverged
    device: str = "auto"  # auto | cpu | cuda[:i]
    dtype: str = "auto"  # auto (bf16 autocast on CUDA, float32 on CPU) | float32 | float64 | bfloat16
    log_every_steps: int = 50  # progress line interval
    eval_batch_size: int = 32  # sequences per evaluation forward (does not change the eval set)
    moe_backend: str = "auto"  # auto | torch | scattermoe
    compile: bool = False  # torch.compile each block (the head's loss stays eager); see RESULTS.md
    head: str = "auto"  # output head's loss: auto | full | chunked | fused (proxy_models/head.py)
    activation_checkpointing: str = "auto"  # auto (only when an auto micro-batch needs it to fit) | on | off
    memory_budget_gib: float | None = None  # memory one step may use, GiB; None = 90% of free CUDA memory

    def __post_init__(self) -> None:
        for name in ("batch_size", "tokens", "divergence_factor", "log_every_steps", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)!r}: must be positive")
        if self.dtype not in (*DTYPES, "auto"):
            raise ConfigError(f"dtype={self.dtype!r}: choose one of {['auto', *DTYPES]}")
        self._validate_execution()
        if self.steps < 1:
            raise ConfigError(
                f"tokens={self.tokens:g} is less than one step of batch_size * seq_len = {self.tokens_per_step}"
            )
        self.schedule.validate(total_tokens=self.steps * self.tokens_per_step)

    def _validate_execution(self) -> None:
        micro = self.micro_batch_size
        if isinstance(micro, str) and micro != "auto":
            raise ConfigError(f"micro_batch_size={micro!r}: a positive integer, 'auto' or None")
        if isinstance(micro, int) and (micro <= 0 or self.batch_size % micro):
            raise ConfigError(f"micro_batch_size={micro} does not divide batch_size={self.batch_size}")
        if self.head not in HEADS:
            raise ConfigError(f"head={self.head!r}: choose one of {list(HEADS)}")
        if self.activation_checkpointing not in CHECKPOINTING:
            raise ConfigError(
                f"activation_checkpointing={self.activation_checkpointing!r}: choose one of {list(CHECKPOINTING)}"
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


@dataclass
class RunResult:
    """The outcome of one proxy run at one token budget: one row of the results table."""

    model: str
    n_params: int
    n_params_non_embedding: int
    m_width: float
    schedule: str
    lr: float
    lr_max: float
    power_a: float
    power_b: float
    batch_size: int
    seq_len: int
    tokens: float
    warmup_tokens: float
    decay_fraction: float
    decay_shape: str
    seed: int
    loss_eval: float  # nats/token on the fixed held-out set
    ppl_eval: float
    loss_train: float  # mean train loss over the last logging window, nats/token
    status: str  # ok | diverged
    diverged_at_tokens: float
    wall_s: float
    tokens_per_s: float
    mfu: float
    device: str
    phase: str = "final"  # final: the budget's result after its decay | trunk: the stable-phase trunk at a fork
    mfu_attention: float = math.nan  # mfu with attention FLOPs (perf.py); nan in rows saved before it existed
    parametrisation: str = "mup"  # every ProxyLM is muP; analysis reads it to label axes and draw the paper's law

    def to_row(self) -> dict:
        return asdict(self)


class Trainer:
    """Trains one proxy model. `run()` does the whole run; lineages call `train_to` and `evaluate`."""

    def __init__(self, config: TrainConfig, *, corpus: TokenCorpus | None = None, log: Callable | None = None):
        self.cfg, self.proxy, self.log = config, config.proxy, log
        self.device = resolve_device(config.device)
        self.param_dtype, self.autocast = _precision(config.dtype, self.device)
        self.corpus = corpus if corpus is not None else load_corpus(config.data)
        if self.corpus.vocab_size > self.proxy.vocab_size:
            raise ConfigError(
                f"corpus vocab {self.corpus.vocab_size} > model vocab_size {self.proxy.vocab_size}: "
                "use a model with a larger vocab_size or a smaller tokenizer"
            )
        torch.manual_seed(config.seed)
        self.model = ProxyLM(self.proxy, moe_backend=config.moe_backend).to(self.device, self.param_dtype)
        self.model.head = config.head
        self.micro_batch_size, self.model.activation_checkpointing = self._plan_micro_batch()
        self.micro_batch_shrinks = 0  # out-of-memory errors that halved the micro-batch (never restored)
        self.params = list(self.model.parameters())  # listed once: walking the modules each step shows on small models
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, m_width=self.proxy.m_width, weight_decay=config.weight_decay),
            lr=0.0, betas=(config.beta1, config.beta2), eps=config.eps, fused=True,  # one kernel per group
        )
        if config.compile:  # the blocks only: the chunked or fused head's loss is already one pass per chunk
            for block in self.model.blocks:
                block.compile()  # in place: parameter names, checkpoints and packing do not change
        self.step, self.first_loss, self.diverged_at = 0, math.nan, math.nan
        self.recent_losses: list[float] = []
        self.pending_losses: list[torch.Tensor] = []  # on the device, not yet read by the host
        # CPU steps are synchronous anyway: read every loss at once, so a divergence stops the run at once.
        self.check_every = CUDA_CHECK_EVERY_STEPS if self.device.type == "cuda" else 1
        self.train_seconds = 0.0  # restored by checkpoints: the run's own training time
        self.curve = CurveRecorder.for_run(config)  # log-spaced loss points, restored by checkpoints
        # What this object did, never restored by checkpoints (retry and overhead accounting).
        self.steps_trained, self.seconds_trained, self.eval_seconds = 0, 0.0, 0.0

    @property
    def tokens_seen(self) -> int:
        return self.step * self.cfg.tokens_per_step

    @property
    def diverged(self) -> bool:
        return not math.isnan(self.diverged_at)

    def lr_at_step(self, step: int, *, total_tokens: float | None) -> float:
        """lr of step `step`, evaluated at the tokens seen once that step's batch is consumed."""
        tokens = (step + 1) * self.cfg.tokens_per_step
        return self.cfg.schedule.lr_at(tokens, total_tokens=total_tokens, batch_size=self.cfg.batch_size)

    def train_to(self, step: int, *, total_tokens: float | None, checkpoint_path: str | None = None,
                 checkpoint_every_steps: int = 0) -> None:
        """Train until `self.step == step` (or divergence) under the schedule for budget `total_tokens`.

        With `checkpoint_path`, the state is saved every `checkpoint_every_steps` steps and at the end.
        """
        every = checkpoint_every_steps or max(step - self.step, 1)
        while self.step < step and not self.diverged:
            start, start_step = time.perf_counter(), self.step
            self._train_until(min(self.step + every, step), total_tokens)
            seconds = time.perf_counter() - start
            self.train_seconds += seconds  # the run's own time: restored by checkpoints
            self.seconds_trained += seconds  # this object's work: never restored (retry accounting)
            self.steps_trained += self.step - start_step
            if checkpoint_path:
                self.save_checkpoint(checkpoint_path)

    def _train_until(self, step: int, total_tokens: float | None) -> None:
        while self.step < step and not self.diverged:
            self.pending_losses.append(self.train_step(self.lr_at_step(self.step, total_tokens=total_tokens)))
            logging = self.log and self.step % self.cfg.log_every_steps == 0
            if logging or len(self.pending_losses) >= self.check_every:
                self._check_losses()
            if logging:
                self.log({"step": self.step, "tokens": self.tokens_seen, "loss_train": self.loss_train})
        self._check_losses()  # every loss read (and the device idle) before the caller times or saves

    def train_step(self, lr: float) -> torch.Tensor:
        """One optimizer step on batch `self.step`; returns its cross-entropy (nats/token) as a 0-d tensor on
        the device, so that nothing waits for the device here."""
        x, y = self._batch()
        set_lr(self.optimizer, lr)
        loss = self._gradients(x, y)
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return loss

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `self.step` on the device; on CUDA copied from pinned memory without waiting for it."""
        x, y = train_batch(self.corpus, step=self.step, batch_size=self.cfg.batch_size,
                           seq_len=self.proxy.seq_len, seed=self.cfg.seed)
        if self.device.type != "cuda":
            return x, y
        return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step's gradients, accumulated over micro-batches. A CUDA out-of-memory error halves the
        micro-batch and starts the step's gradients again: no update was applied, so the step is the same."""
        while True:
            try:
                return self._accumulate(x, y)
            except torch.cuda.OutOfMemoryError:
                if not self._can_shrink():
                    raise
            self._shrink_micro_batch()  # outside `except`: the failed attempt's tensors are freed by now

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Backward over the micro-batches, each weighted by its share of the batch; the mean loss."""
        total = None
        for xs, ys in zip(x.split(self.micro_batch_size), y.split(self.micro_batch_size)):
            share = xs.shape[0] / self.cfg.batch_size
            with self.autocast():
                _, loss = self.model(xs, ys)
                objective = loss + self.proxy.router_aux_loss * self.model.aux_loss() if self.proxy.is_moe else loss
            (objective * share).backward()
            part = loss.detach().double() * share
            total = part if total is None else total + part
        return total

    def _can_shrink(self) -> bool:
        return self.micro_batch_size > 1 or not self.model.activation_checkpointing

    def _shrink_micro_batch(self) -> None:
        """Half the micro-batch (the largest divisor of batch_size at most half of it); at one sequence,
        checkpoint the blocks instead."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = [d for d in divisors_descending(self.cfg.batch_size) if d <= self.micro_batch_size // 2]
        if smaller:
            self.micro_batch_size = smaller[0]
        else:
            self.model.activation_checkpointing = True
        self.micro_batch_shrinks += 1

    def _plan_micro_batch(self) -> tuple[int, bool]:
        """(micro-batch size, activation checkpointing) from the config; 'auto' from the memory estimate."""
        cfg, forced = self.cfg, self.cfg.activation_checkpointing == "on"
        micro = cfg.micro_batch_size
        if micro is None:
            micro = "auto" if self.device.type == "cuda" else cfg.batch_size
        if micro != "auto":
            return micro, forced
        head = resolve_head(cfg.head, n_tokens=cfg.tokens_per_step, vocab_size=self.proxy.vocab_size,
                            device=self.device)
        choice = choose_micro_batch(
            self.proxy, batch_size=cfg.batch_size, budget_bytes=self.memory_budget_bytes(),
            checkpointing=cfg.activation_checkpointing, head=head, param_bytes=self.param_dtype.itemsize,
            compute_bytes=compute_dtype(self.device, cfg.dtype).itemsize,
        )
        return choice.micro_batch_size, choice.activation_checkpointing

    def memory_budget_bytes(self) -> int:
        """Bytes a step may use: memory_budget_gib, else 90% of the CUDA memory free or held by this process."""
        if self.cfg.memory_budget_gib is not None:
            return int(self.cfg.memory_budget_gib * GIB)
        if self.device.type != "cuda":
            raise ConfigError("micro_batch_size='auto' off CUDA needs memory_budget_gib (e.g. 4): "
                              "there is no device memory to measure")
        free, _ = torch.cuda.mem_get_info(self.device)
        return int((free + torch.cuda.memory_allocated(self.device)) * USABLE_FRACTION)

    def _check_losses(self) -> None:
        """Read the pending losses (one host sync) and watch them in step order."""
        if not self.pending_losses:
            return
        losses = torch.stack(self.pending_losses).tolist()
        first_step, self.pending_losses = self.step - len(losses), []
        for i, loss in enumerate(losses):
            if self.diverged:
                break
            self._watch(loss, tokens=(first_step + i + 1) * self.cfg.tokens_per_step)

    def _watch(self, loss: float, *, tokens: int) -> None:
        """Record the loss of the step that ended at `tokens` seen; mark divergence there."""
        self.curve.watch(loss, tokens=tokens)
        if math.isnan(self.first_loss):
            self.first_loss = loss
        self.recent_losses = (self.recent_losses + [loss])[-self.cfg.log_every_steps:]
        if not math.isfinite(loss) or loss > self.cfg.divergence_factor * self.first_loss:
            self.diverged_at = float(tokens)

    @property
    def loss_train(self) -> float:
        return sum(self.recent_losses) / len(self.recent_losses) if self.recent_losses else math.nan

    @torch.no_grad()
    def evaluate(self) -> float:
        """Mean cross-entropy (nats/token) over the fixed held-out set."""
        start = time.perf_counter()
        self.model.eval()
        batches = eval_batches(self.corpus, seq_len=self.proxy.seq_len, batch_size=self.cfg.eval_batch_size,
                               eval_tokens=self.cfg.data.eval_tokens)
        total, windows = 0.0, 0
        for x, y in batches:  # the last batch may hold fewer windows: weight by window count
            with self.autocast():
                _, loss = self.model(x.to(self.device), y.to(self.device))
            total, windows = total + loss.item() * x.shape[0], windows + x.shape[0]
        self.model.train()
        self.eval_seconds += time.perf_counter() - start
        return total / windows

    def result(self, *, tokens: float) -> RunResult:
        """The result row of the budget `tokens`, evaluating the model as it is now."""
        loss_eval = math.nan if self.diverged else self.evaluate()
        trained = self.step * self.cfg.tokens_per_step
        tokens_per_s = trained / self.train_seconds if self.train_seconds else math.nan
        n_params, p = self.proxy.num_params(active=True), self.proxy
        peak = peak_flops(self.device, compute_dtype(self.device, self.cfg.dtype))
        attention = attention_flops_per_token(p.n_layers, p.n_heads, p.d_head, p.seq_len)
        return _result_row(self.cfg, self.proxy, tokens=tokens, loss_eval=loss_eval, loss_train=self.loss_train,
                           diverged_at=self.diverged_at, wall_s=self.train_seconds, tokens_per_s=tokens_per_s,
                           mfu=mfu(n_params, tokens_per_s, peak),
                           mfu_attention=utilisation(6 * n_params + attention, tokens_per_s, peak),
                           device=device_name(self.device))

    def results(self, *, tokens: float) -> list[RunResult]:
        """`result` as a list of one: the lineage driver serves solo and packed trainers alike."""
        return [self.result(tokens=tokens)]

    def run(self, *, checkpoint_path: str | None = None, checkpoint_every_steps: int = 0) -> RunResult:
        """Train the configured budget (resuming from `checkpoint_path` if it exists) and evaluate."""
        if checkpoint_path and os.path.exists(checkpoint_path):
            self.load_checkpoint(checkpoint_path)
        self.train_to(self.cfg.steps, total_tokens=self.cfg.steps * self.cfg.tokens_per_step,
                      checkpoint_path=checkpoint_path, checkpoint_every_steps=checkpoint_every_steps)
        return self.result(tokens=self.cfg.tokens)

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
            "first_loss": self.first_loss, "diverged_at": self.diverged_at, "recent_losses": self.recent_losses,
            "train_seconds": self.train_seconds, "curve": self.curve.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.first_loss, self.diverged_at = state["step"], state["first_loss"], state["diverged_at"]
        self.recent_losses, self.train_seconds = list(state["recent_losses"]), state["train_seconds"]
        self.curve.load_state_dict(state.get("curve"), step=self.step)

    def save_checkpoint(self, path: str) -> None:
        """Write the training state atomically (temp file, then rename)."""
        tmp = f"{path}.tmp-{os.getpid()}"
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)

    def load_checkpoint(self, path: str) -> None:
        self.load_state_dict(torch.load(path, map_location=self.device, weights_only=True))


def _precision(dtype: str, device: torch.device):
    """(parameter dtype, autocast context factory) for the requested precision."""
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16":
        return torch.float32, lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return DTYPES[dtype], lambda: torch.autocast(device.type, enabled=False)


def _result_row(cfg: TrainConfig, proxy: ProxyConfig, **measured) -> RunResult:
    s = cfg.schedule
    is_power = s.name == "power"
    nan = math.nan
    status = "diverged" if not math.isnan(measured["diverged_at"]) else "ok"
    return RunResult(
        model=cfg.model, n_params=proxy.num_params(), n_params_non_embedding=proxy.num_params(embedding=False),
        m_width=proxy.m_width, schedule=s.name, lr=s.peak_lr(batch_size=cfg.batch_size),
        lr_max=s.lr_max if is_power else nan, power_a=s.power_a if is_power else nan,
        power_b=s.power_b if is_power else nan, batch_size=cfg.batch_size, seq_len=proxy.seq_len,
        tokens=measured.pop("tokens"), warmup_tokens=s.warmup_tokens, decay_fraction=s.decay_fraction,
        decay_shape=s.decay_shape, seed=cfg.seed, ppl_eval=math.exp(measured["loss_eval"]) if status == "ok" else nan,
        status=status, diverged_at_tokens=measured.pop("diverged_at"), **measured,
    )
