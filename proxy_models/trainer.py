"""One proxy run: AdamW with muP groups, a schedule of tokens seen, divergence detection, checkpoints.

Batch k is a pure function of (seed, k) and the lr of step k a pure function of the tokens seen, so the
whole training state is (model, optimizer, step): a checkpoint restores a run exactly.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch
from torch._dynamo.exc import TorchDynamoException

from powersweep.proxy_models import checkpoint
from powersweep.proxy_models.compile_cache import (
    compile_failed_here,
    compile_model,
    record_compile_failure,
    resolve_compile,
    resolve_compile_mode,
    uncompile_model,
)
from powersweep.proxy_models.curve_recorder import CurveRecorder
from powersweep.proxy_models.data import TokenCorpus, eval_batches, load_corpus, train_batch
from powersweep.proxy_models.head import resolve_head
from powersweep.proxy_models.memory import (
    GIB,
    USABLE_FRACTION,
    choose_micro_batch,
    divisors_descending,
)
from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.mup import param_groups, set_lr
from powersweep.proxy_models.perf import (
    attention_flops_per_token,
    compute_dtype,
    device_name,
    layer_seconds,
    mfu,
    peak_flops,
    resolve_device,
    utilisation,
)
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError, ProxyConfig
from powersweep.proxy_models.train_config import CUDA_GRAPH_MODES, DTYPE_NAMES, TrainConfig
from powersweep.rows import RunResult

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
# on CUDA, losses stay on the device and are read (one sync) every this many steps
CUDA_CHECK_EVERY_STEPS = 16


class TrainingLoop:
    """The training loop of K variants that train in lockstep and differ only in their schedule and seed:
    K = 1 is a solo run (`Trainer`), K > 1 packed variants (proxy_models/packed.py). Variants of one seed
    train on the same batches; variants of several seeds each on their own seed's, as their solo runs would.

    Everything but the model is here, once: batches, lrs, micro-batches and out-of-memory halving, the
    per-step loss watch (divergence per variant), evaluation, result rows, timing and checkpoints. A subclass
    gives the model's side: `lr_at_step`, `_set_lr`, `_objective`, `_backward`, `_update`, `_zero_grad`,
    `_eval_losses`, `_eval_mode`, `_compile`, `_uncompile`, the `checkpointing` attribute and `model_state` /
    `load_model_state`.
    """

    def __init__(
        self,
        config: TrainConfig,
        schedules: Sequence[ScheduleConfig],
        *,
        seeds: Sequence[int] | None,
        corpus: TokenCorpus | None,
        log: Callable | None,
    ):
        self.cfg, self.proxy, self.log = config, config.proxy, log
        seeds = [config.seed] * len(schedules) if seeds is None else list(seeds)
        if len(seeds) != len(schedules):
            raise ConfigError(
                f"seeds={seeds}: give one seed per schedule ({len(schedules)}), or none for "
                f"seed {config.seed} throughout"
            )
        self.configs = tuple(
            config if (s, seed) == (config.schedule, config.seed) else replace(config, schedule=s, seed=seed)
            for s, seed in zip(schedules, seeds)
        )
        self.k = len(self.configs)
        self.device = resolve_device(config.device)
        self.param_dtype, self.autocast = _precision(config.dtype, self.device)
        self.corpus = corpus if corpus is not None else load_corpus(config.data)
        if self.corpus.vocab_size > self.proxy.vocab_size:
            raise ConfigError(
                f"corpus vocab {self.corpus.vocab_size} > model vocab_size {self.proxy.vocab_size}: "
                "use a model with a larger vocab_size or a smaller tokenizer"
            )
        self.compiled = False  # blocks compiled (a subclass that compiles sets it)
        # torch.compile's mode, 'auto' resolved (a subclass that compiles sets it)
        self.compile_mode = "default"
        self.compile_error: str | None = None  # why compile 'auto' fell back to eager, if it did
        self.micro_batch_shrinks = 0  # out-of-memory errors that halved the micro-batch (never restored)
        self.step = 0
        self.first_losses = [math.nan] * self.k  # per variant: the first step's loss
        self.diverged_ats = [math.nan] * self.k  # per variant: tokens seen at its first bad step
        self.loss_windows: list[list[float]] = [[] for _ in range(self.k)]  # per variant: the last losses
        self.pending_losses: list[torch.Tensor] = []  # on the device, not yet read by the host
        # CPU steps are synchronous anyway: read every loss at once, so a divergence stops the run at once.
        self.check_every = CUDA_CHECK_EVERY_STEPS if self.device.type == "cuda" else 1
        self.train_seconds = 0.0  # restored by checkpoints: the run's own training time
        self.curve = CurveRecorder.for_run(
            config, schedules
        )  # per variant: log-spaced loss points, checkpointed
        # What this object did, never restored by checkpoints (retry and overhead accounting).
        self.steps_trained, self.seconds_trained, self.eval_seconds = 0, 0.0, 0.0
        # training held up by checkpoint saves (their writes run in the background)
        self.checkpoint_seconds = 0.0
        self.first_step_seconds = 0.0  # host seconds of this object's first step (its compile, when compiled)

    @property
    def seeds(self) -> tuple[int, ...]:
        """Each variant's seed: its initial weights and its batches."""
        return tuple(c.seed for c in self.configs)

    @property
    def tokens_seen(self) -> int:
        return self.step * self.cfg.tokens_per_step

    @property
    def diverged(self) -> bool:
        """Every variant diverged: nothing left to train."""
        return not any(math.isnan(d) for d in self.diverged_ats)

    def schedule_lrs(self, step: int, *, total_tokens: float | None) -> list[float]:
        """Each variant's lr of step `step`,
        evaluated at the tokens seen once that step's batch is consumed."""
        tokens = (step + 1) * self.cfg.tokens_per_step
        return [
            c.schedule.lr_at(tokens, total_tokens=total_tokens, batch_size=c.batch_size) for c in self.configs
        ]

    def train_to(
        self,
        step: int,
        *,
        total_tokens: float | None,
        checkpoint_path: str | None = None,
        checkpoint_every_steps: int = 0,
    ) -> None:
        """Train until `self.step == step` (or divergence) under the schedule for budget `total_tokens`.

        With `checkpoint_path`, the state is saved every `checkpoint_every_steps` steps and at the end, each
        written in the background while training goes on.
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
                self.save_checkpoint(checkpoint_path, background=True)

    def _train_until(self, step: int, total_tokens: float | None) -> None:
        while self.step < step and not self.diverged:
            first = time.perf_counter() if not self.first_step_seconds else None
            self.pending_losses.append(self.train_step(self.lr_at_step(self.step, total_tokens=total_tokens)))
            if first is not None:
                self.first_step_seconds = time.perf_counter() - first
            logging = self.log and self.step % self.cfg.log_every_steps == 0
            if logging or len(self.pending_losses) >= self.check_every:
                self._check_losses()
            if logging:
                self.log({"step": self.step, "tokens": self.tokens_seen, "loss_train": self.loss_train})
        self._check_losses()  # every loss read (and the device idle) before the caller times or saves

    def train_step(self, lr) -> torch.Tensor:
        """One optimizer step on batch `self.step` at `lr` (what `lr_at_step` gives); returns its
        cross-entropy (nats/token; 0-d solo, (K,) packed) on the device, so that nothing waits for the device
        here."""
        x, y = self._batch()
        self._set_lr(lr)
        losses = self._gradients(x, y)
        self._update(losses)
        self._zero_grad()
        self.step += 1
        return losses

    def _batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch `self.step` on the device: (B, T) tokens and targets when every variant has one seed, else
        (K, B, T), each variant's seed's batch. On CUDA copied from pinned memory without waiting for it."""
        batches = {
            seed: train_batch(
                self.corpus,
                step=self.step,
                batch_size=self.cfg.batch_size,
                seq_len=self.proxy.seq_len,
                seed=seed,
            )
            for seed in dict.fromkeys(self.seeds)
        }
        if len(batches) == 1:
            x, y = batches[self.seeds[0]]
        else:
            x, y = (torch.stack([batches[seed][i] for seed in self.seeds]) for i in (0, 1))
        if self.device.type != "cuda":
            return x, y
        return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(
            self.device, non_blocking=True
        )

    def _gradients(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The step's gradients, accumulated over micro-batches. A CUDA out-of-memory error halves the
        micro-batch and starts the step's gradients again: no update was applied, so the step is the same."""
        while True:
            try:
                return self._eager_if_compiling_fails(self._accumulate, x, y)
            except torch.cuda.OutOfMemoryError:
                if not self._can_shrink():
                    raise
            self._shrink_micro_batch()  # outside `except`: the failed attempt's tensors are freed by now

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Backward over the micro-batches, each weighted by its share of the batch; the mean loss(es)."""
        total = None  # the batch dimension is the one before the sequence: (B, T), or (K, B, T) per variant
        for xs, ys in zip(x.split(self.micro_batch_size, dim=-2), y.split(self.micro_batch_size, dim=-2)):
            share = xs.shape[-2] / self.cfg.batch_size
            with self.autocast():
                objective, loss = self._objective(xs, ys)
            self._backward((objective * share).sum())  # variants share no parameter: one backward for all
            part = loss.detach().double() * share
            total = part if total is None else total + part
        return total

    def _compiles(self, *, moe: bool = False) -> bool:
        """Whether to compile the model (`resolve_compile`); 'auto' does not where compiling failed earlier in
        this process (the rows' `compile_error` says why)."""
        wanted = resolve_compile(self.cfg.compile, self.device, moe=moe)
        if wanted and self.cfg.compile == "auto":
            self.compile_error = compile_failed_here()
        return wanted and not self.compile_error

    def _eager_if_compiling_fails(self, fn: Callable, *args):
        """fn(*args); where compiling fails on this machine and `compile` is 'auto', fn(*args) again in eager
        (the step's gradients start again, as after an out-of-memory error). With compile=True it is an
        error."""
        try:
            return fn(*args)
        except TorchDynamoException as error:
            if not self.compiled:
                raise
            reason = record_compile_failure(error)
            if self.cfg.compile != "auto":
                raise ConfigError(
                    f"compile=True: torch.compile failed on this machine ({reason}); set compile "
                    "to 'auto' to train eager where it fails, or to false"
                ) from error
        warnings.warn(
            f"torch.compile failed on this machine, training eager: {reason}", RuntimeWarning, stacklevel=2
        )
        self._zero_grad()
        self._uncompile()
        self.compiled, self.compile_error = False, reason
        return fn(*args)

    def _leave_cuda_graphs(self) -> None:
        """Compile the model again in mode 'default': a CUDA graph holds its memory pool as long as it lives,
        so after an out-of-memory error the smaller micro-batch trains without graphs (and frees theirs)."""
        # inductor's: imported when compiling
        from torch._inductor.cudagraph_trees import reset_cudagraph_trees

        self._uncompile()
        reset_cudagraph_trees()
        self.compile_mode = "default"
        self._compile()

    def _can_shrink(self) -> bool:
        return self.micro_batch_size > 1 or not self.checkpointing

    def _shrink_micro_batch(self) -> None:
        """Half the micro-batch (the largest divisor of batch_size at most half of it); at one sequence,
        checkpoint the blocks instead. Under CUDA graphs, compile again without them first."""
        self._zero_grad()
        if self.compiled and self.compile_mode in CUDA_GRAPH_MODES:
            self._leave_cuda_graphs()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        smaller = [d for d in divisors_descending(self.cfg.batch_size) if d <= self.micro_batch_size // 2]
        if smaller:
            self.micro_batch_size = smaller[0]
        else:
            self.checkpointing = True
        self.micro_batch_shrinks += 1

    def _plan_micro_batch(self) -> tuple[int, bool]:
        """(micro-batch size, activation checkpointing) from the config; 'auto' from the memory estimate of
        all K variants' step."""
        cfg, forced = self.cfg, self.cfg.activation_checkpointing == "on"
        micro = cfg.micro_batch_size
        if micro is None:
            micro = "auto" if self.device.type == "cuda" else cfg.batch_size
        if micro != "auto":
            return micro, forced
        head = resolve_head(
            cfg.head, n_tokens=cfg.tokens_per_step, vocab_size=self.proxy.vocab_size, device=self.device
        )
        choice = choose_micro_batch(
            self.proxy,
            batch_size=cfg.batch_size,
            budget_bytes=self.memory_budget_bytes(),
            checkpointing=cfg.activation_checkpointing,
            head=head,
            param_bytes=self.param_dtype.itemsize,
            compute_bytes=compute_dtype(self.device, cfg.dtype).itemsize,
            variants=self.k,
        )
        return choice.micro_batch_size, choice.activation_checkpointing

    def memory_budget_bytes(self) -> int:
        """Bytes a step may use: memory_budget_gib, else 90% of the CUDA memory free or held by this process
        (allocated, or cached by its allocator from an earlier trainer: reused before the device's free
        memory)."""
        if self.cfg.memory_budget_gib is not None:
            return int(self.cfg.memory_budget_gib * GIB)
        if self.device.type != "cuda":
            raise ConfigError(
                "micro_batch_size='auto' off CUDA needs memory_budget_gib (e.g. 4): "
                "there is no device memory to measure"
            )
        free, _ = torch.cuda.mem_get_info(self.device)
        return int((free + torch.cuda.memory_reserved(self.device)) * USABLE_FRACTION)

    def _check_losses(self) -> None:
        """Read the pending losses (one host sync) and watch them in step order."""
        if not self.pending_losses:
            return
        losses = torch.stack(self.pending_losses).reshape(len(self.pending_losses), self.k).tolist()
        first_step, self.pending_losses = self.step - len(losses), []
        for i, step_losses in enumerate(losses):
            if self.diverged:
                break
            self._watch(step_losses, tokens=(first_step + i + 1) * self.cfg.tokens_per_step)

    def _watch(self, losses: list[float], *, tokens: int) -> None:
        """Record each variant's loss of the step that ended at `tokens` seen; mark divergence there. A
        diverged variant records nothing more."""
        self.curve.watch(losses, tokens=tokens)
        for i, loss in enumerate(losses):
            if not math.isnan(self.diverged_ats[i]):
                continue
            if math.isnan(self.first_losses[i]):
                self.first_losses[i] = loss
            self.loss_windows[i] = (self.loss_windows[i] + [loss])[-self.cfg.log_every_steps :]
            if not math.isfinite(loss) or loss > self.cfg.divergence_factor * self.first_losses[i]:
                self.diverged_ats[i] = float(tokens)

    def variant_loss_train(self, i: int) -> float:
        """Mean training loss of variant i over its last logging window (nats/token)."""
        window = self.loss_windows[i]
        return sum(window) / len(window) if window else math.nan

    @property
    def loss_train(self) -> float:
        """The first variant's (a solo run's) `variant_loss_train`."""
        return self.variant_loss_train(0)

    def evaluate_variants(self) -> list[float]:
        """Each variant's mean cross-entropy (nats/token) over the fixed held-out set."""
        start = time.perf_counter()
        result = self._eager_if_compiling_fails(self._evaluate)
        self.eval_seconds += time.perf_counter() - start
        return result

    @torch.no_grad()
    def _evaluate(self) -> list[float]:
        self._eval_mode(True)
        batches = eval_batches(
            self.corpus,
            seq_len=self.proxy.seq_len,
            batch_size=self.cfg.eval_batch_size,
            eval_tokens=self.cfg.data.eval_tokens,
        )
        total, windows = None, 0
        for x, y in batches:  # the last batch may hold fewer windows: weight by window count
            with self.autocast():
                losses = self._eval_losses(x.to(self.device), y.to(self.device))
            part = losses.double() * x.shape[0]  # float64 sums on the device, read once at the end
            total, windows = part if total is None else total + part, windows + x.shape[0]
        self._eval_mode(False)
        return (total / windows).reshape(self.k).tolist()

    def results(self, *, tokens: float) -> list[RunResult]:
        """One result row per variant for the budget `tokens`, evaluating the variants as they are now. Each
        row's tokens_per_s is its own tokens over the run's wall time: a packed run's throughput is their
        sum."""
        evals = [math.nan] * self.k if self.diverged else self.evaluate_variants()
        trained = self.step * self.cfg.tokens_per_step
        tokens_per_s = trained / self.train_seconds if self.train_seconds else math.nan
        n_params, p = self.proxy.num_params(active=True), self.proxy
        peak = peak_flops(self.device, compute_dtype(self.device, self.cfg.dtype))
        attention = attention_flops_per_token(p.n_layers, p.n_heads, p.d_head, p.seq_len)
        return [
            _result_row(
                config,
                self.proxy,
                tokens=tokens,
                loss_train=self.variant_loss_train(i),
                loss_eval=evals[i] if math.isnan(self.diverged_ats[i]) else math.nan,
                diverged_at=self.diverged_ats[i],
                wall_s=self.train_seconds,
                tokens_per_s=tokens_per_s,
                mfu=mfu(n_params, tokens_per_s, peak),
                mfu_attention=utilisation(6 * n_params + attention, tokens_per_s, peak),
                device=device_name(self.device),
                execution=self.execution(),
            )
            for i, config in enumerate(self.configs)
        ]

    def execution(self) -> str:
        """How this object trained, as JSON text for the row's provenance: variants packed, micro-batch,
        checkpointing, compiled blocks (and why not, where compiling failed) and the out-of-memory errors it
        absorbed (this process's, not restored by checkpoints)."""
        failed = {"compile_error": self.compile_error} if self.compile_error else {}
        mode = {"compile_mode": self.compile_mode} if self.compiled else {}
        return json.dumps(
            {
                "pack": self.k,
                "micro_batch_size": self.micro_batch_size,
                "compiled": self.compiled,
                **mode,
                "activation_checkpointing": bool(self.checkpointing),
                "out_of_memory_shrinks": self.micro_batch_shrinks,
                **failed,
            },
            sort_keys=True,
        )

    def state_dict(self) -> dict:
        """The whole training state; tensors are live references (copy before training on)."""
        return {
            **self.model_state(),
            "step": self.step,
            "first_loss": list(self.first_losses),
            "diverged_at": list(self.diverged_ats),
            "recent_losses": [list(w) for w in self.loss_windows],
            "train_seconds": self.train_seconds,
            "curve": self.curve.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.load_model_state(state)
        self.step, self.train_seconds = state["step"], state["train_seconds"]
        self.first_losses = [float(v) for v in state["first_loss"]]
        self.diverged_ats = [float(v) for v in state["diverged_at"]]
        self.loss_windows = [list(w) for w in state["recent_losses"]]
        self.curve.load_state_dict(state["curve"])

    def save_checkpoint(self, path: str, *, background: bool = False) -> None:
        """Save the training state to `path` atomically. In the background (proxy_models/checkpoint.py) it
        returns once the state is copied to host memory and the previous write of `path` is done; readers of
        `path` in this process wait for the file."""
        start = time.perf_counter()
        checkpoint.save(self.state_dict(), path)
        if not background:
            checkpoint.wait(path)
        self.checkpoint_seconds += time.perf_counter() - start

    def load_checkpoint(self, path: str) -> None:
        """Restore the state saved at `path` (once this process's write of it is done)."""
        self.load_state_dict(checkpoint.load(path, map_location=self.device))


class Trainer(TrainingLoop):
    """Trains one proxy model. `run()` does the whole run; lineages call `train_to` and `results`."""

    def __init__(
        self, config: TrainConfig, *, corpus: TokenCorpus | None = None, log: Callable | None = None
    ):
        super().__init__(config, (config.schedule,), seeds=None, corpus=corpus, log=log)
        torch.manual_seed(config.seed)
        self.model = ProxyLM(self.proxy, moe_backend=config.moe_backend).to(self.device, self.param_dtype)
        self.model.head = config.head
        self.micro_batch_size, self.checkpointing = self._plan_micro_batch()
        self.params = list(
            self.model.parameters()
        )  # listed once: walking the modules each step shows on small models
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, m_width=self.proxy.m_width, weight_decay=config.weight_decay),
            lr=0.0,
            betas=(config.beta1, config.beta2),
            eps=config.eps,
            fused=True,  # one kernel per group
        )
        self.compiled = self._compiles(moe=self.proxy.is_moe)
        self.compile_mode = resolve_compile_mode(
            config.compile_mode,
            config.compile_scope,
            self.device,
            moe=self.proxy.is_moe,
            layer_seconds=self._layer_seconds(),
        )
        if self.compiled:
            self._compile()
        if self._graphed:
            for p in self.params:
                p.grad = torch.zeros_like(p)

    @property
    def checkpointing(self) -> bool:
        """Activation checkpointing of the blocks."""
        return self.model.activation_checkpointing

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        self.model.activation_checkpointing = on

    @property
    def first_loss(self) -> float:
        return self.first_losses[0]

    @property
    def diverged_at(self) -> float:
        return self.diverged_ats[0]

    @property
    def recent_losses(self) -> list[float]:
        return self.loss_windows[0]

    def lr_at_step(self, step: int, *, total_tokens: float | None) -> float:
        """lr of step `step`, evaluated at the tokens seen once that step's batch is consumed."""
        return self.schedule_lrs(step, total_tokens=total_tokens)[0]

    def _set_lr(self, lr: float) -> None:
        set_lr(self.optimizer, lr)

    def _objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to backpropagate, the cross-entropy): MoE adds its load-balancing loss."""
        _, loss = self.model(x, y)
        return (
            loss + self.proxy.router_aux_loss * self.model.aux_loss() if self.proxy.is_moe else loss
        ), loss

    def _backward(self, objective: torch.Tensor) -> None:
        objective.backward()

    def _update(self, losses: torch.Tensor) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()

    def _layer_seconds(self) -> float:
        """One layer's forward and backward of a micro-batch at the device's peak (where 'auto' picks CUDA
        graphs: compile_cache.resolve_compile_mode); 0 where it cannot matter, so no peak is measured
        there."""
        if self.device.type != "cuda" or self.cfg.compile_mode != "auto":
            return 0.0
        peak = peak_flops(self.device, compute_dtype(self.device, self.cfg.dtype))
        return layer_seconds(self.proxy, self.micro_batch_size * self.proxy.seq_len, peak)

    @property
    def _graphed(self) -> bool:
        """Whether the compiled blocks replay as CUDA graphs."""
        return self.compiled and self.device.type == "cuda" and self.compile_mode in CUDA_GRAPH_MODES

    def _zero_grad(self) -> None:
        # A CUDA-graph replay writes its gradients into memory that the next replay reuses, and autograd keeps
        # a first gradient as `.grad` without copying it (pytorch/pytorch#169545): the next micro-batch would
        # overwrite it. Gradients kept allocated and zeroed in place take each micro-batch's gradient as a
        # sum.
        self.optimizer.zero_grad(set_to_none=not self._graphed)

    def _eval_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, y)[1]

    def _compile(
        self,
    ) -> None:  # the blocks (or the trunk) only: the head's loss is already one pass per chunk
        compile_model(self.model, mode=self.compile_mode, scope=self.cfg.compile_scope)

    def _uncompile(self) -> None:
        uncompile_model(self.model)

    def _eval_mode(self, on: bool) -> None:
        self.model.train(not on)

    def evaluate(self) -> float:
        """Mean cross-entropy (nats/token) over the fixed held-out set."""
        return self.evaluate_variants()[0]

    def result(self, *, tokens: float) -> RunResult:
        """The result row of the budget `tokens`, evaluating the model as it is now."""
        return self.results(tokens=tokens)[0]

    def run(self, *, checkpoint_path: str | None = None, checkpoint_every_steps: int = 0) -> RunResult:
        """Train the configured budget (resuming from `checkpoint_path` if it exists) and evaluate. Returns
        once the last checkpoint is written."""
        if checkpoint_path and checkpoint.exists(checkpoint_path):
            self.load_checkpoint(checkpoint_path)
        self.train_to(
            self.cfg.steps,
            total_tokens=self.cfg.steps * self.cfg.tokens_per_step,
            checkpoint_path=checkpoint_path,
            checkpoint_every_steps=checkpoint_every_steps,
        )
        result = self.result(tokens=self.cfg.tokens)
        if checkpoint_path:
            checkpoint.wait(checkpoint_path)
        return result

    def model_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


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
        model=cfg.model,
        n_params=proxy.num_params(),
        n_params_non_embedding=proxy.num_params(embedding=False),
        m_width=proxy.m_width,
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
