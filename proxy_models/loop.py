"""The training loop of K variants in lockstep: K = 1 a solo run, K > 1 packed variants.

Batch k is a pure function of (seed, k) and the lr of step k a pure function of the tokens seen, so the
whole training state is (model, optimizer, step): a checkpoint restores a run exactly.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace

import torch

from powersweep.proxy_models import checkpoint, micro_batching
from powersweep.proxy_models.compile_cache import (
    compile_failed_here,
    record_compile_failure,
    resolve_compile,
    resolve_compile_mode,
)
from powersweep.proxy_models.curve_recorder import CurveRecorder
from powersweep.proxy_models.data import TokenCorpus, eval_batches, load_corpus, passes, train_batch
from powersweep.proxy_models.engine import EngineFactory
from powersweep.proxy_models.perf import compute_dtype, layer_seconds, peak_flops, resolve_device
from powersweep.proxy_models.result_rows import execution_record, result_rows
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError
from powersweep.proxy_models.train_config import DTYPE_NAMES, DataError, TrainConfig
from powersweep.rows import RunResult

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}
# on CUDA, losses stay on the device and are read (one sync) every this many steps
CUDA_CHECK_EVERY_STEPS = 16


class TrainingLoop:
    """The training loop of K variants that train in lockstep and differ only in their schedule and seed:
    K = 1 is a solo run (`Trainer`, proxy_models/trainer.py), K > 1 packed variants (`PackedTrainer`,
    proxy_models/packed.py). Variants of one seed train on the same batches; variants of several seeds each
    on their own seed's, as their solo runs would.

    Everything but the model is here, once: batches, lrs, the per-step loss watch (divergence per variant),
    evaluation, compiling and its fallback, timing and checkpoints; the micro-batches and out-of-memory
    halving (proxy_models/micro_batching.py) and the result rows (proxy_models/result_rows.py) in modules of
    their own. The model's side is `engine`, built by `engine_factory` and called only through the
    operations of `Engine` (proxy_models/engine.py).
    """

    def __init__(
        self,
        config: TrainConfig,
        schedules: Sequence[ScheduleConfig],
        engine_factory: EngineFactory,
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
        began = time.perf_counter()
        self.device = resolve_device(config.device)
        if self.device.type == "cuda":
            torch.empty(
                0, device=self.device
            )  # the CUDA context, made here so that its cost shows as its own
        self.param_dtype, self.autocast = _precision(config.dtype, self.device)
        device_at = time.perf_counter()
        self.corpus = corpus if corpus is not None else load_corpus(config.data)
        corpus_at = time.perf_counter()
        if self.corpus.vocab_size > self.proxy.vocab_size:
            raise ConfigError(
                f"corpus vocab {self.corpus.vocab_size} > model vocab_size {self.proxy.vocab_size}: "
                "use a model with a larger vocab_size or a smaller tokenizer"
            )
        if (
            self.corpus.order == "stream"
            and not config.data.repeat
            and passes(self.corpus, config.tokens) > 1
        ):
            reads = passes(self.corpus, config.tokens)
            raise DataError(
                f"corpus {self.corpus.name!r}: its train split holds {len(self.corpus.train):,} tokens and "
                f"tokens={config.tokens:,.0f} would read it {reads:.2f} times: add shards, train fewer "
                "tokens, or allow repeats with data.repeat=True"
            )
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
        # per variant: log-spaced loss points, checkpointed
        self.curve = CurveRecorder.for_run(config, schedules)
        # What this object did, never restored by checkpoints (retry and overhead accounting).
        self.steps_trained, self.seconds_trained, self.eval_seconds = 0, 0.0, 0.0
        # training held up by checkpoint saves (their writes run in the background)
        self.checkpoint_seconds = 0.0
        self.first_step_seconds = 0.0  # host seconds of this object's first step (its compile, when compiled)
        self.engine = engine_factory(
            config, device=self.device, param_dtype=self.param_dtype, seeds=self.seeds
        )
        self.micro_batch_size, self.engine.checkpointing = micro_batching.plan(self)
        self.compiled = self._compiles(moe=self.proxy.is_moe)  # blocks compiled
        # torch.compile's mode, 'auto' resolved
        self.compile_mode = resolve_compile_mode(
            config.compile_mode,
            config.compile_scope,
            self.device,
            packed=self.engine.packed,
            moe=self.proxy.is_moe,
            layer_seconds=0.0 if self.engine.packed else self._layer_seconds(),
        )
        if self.compiled:
            self.engine.compile(self.compile_mode, config.compile_scope)
        self.engine.zero_grad()  # gradients start empty (or allocated and zeroed, where kept: SoloEngine)
        # Where this object's setup went (the start-up breakdown of a sweep: sweeps/progress.py), and when its
        # first step began and ended (wall clock, comparable across a machine's processes; None until then).
        self.setup_seconds = {
            "device": device_at - began,
            "corpus": corpus_at - device_at,
            "model": time.perf_counter() - corpus_at,
        }
        self.first_step_at: tuple[float, float] | None = None

    @property
    def checkpointing(self) -> bool:
        """Whether the blocks' activations are recomputed in backward (the micro-batch plan's choice)."""
        return self.engine.checkpointing

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

    def train(self, *, checkpoint_path: str | None = None, checkpoint_every_steps: int = 0) -> None:
        """Train every variant for the configured budget (each under its own schedule), without evaluating;
        checkpoints as `train_to`."""
        self.train_to(
            self.cfg.steps,
            total_tokens=self.cfg.steps * self.cfg.tokens_per_step,
            checkpoint_path=checkpoint_path,
            checkpoint_every_steps=checkpoint_every_steps,
        )

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
            first = (time.perf_counter(), time.time()) if not self.first_step_seconds else None
            lrs = self.engine.step_lrs(self.schedule_lrs(self.step, total_tokens=total_tokens))
            self.pending_losses.append(self.train_step(lrs))
            if first is not None:
                self.first_step_seconds = time.perf_counter() - first[0]
                self.first_step_at = (first[1], first[1] + self.first_step_seconds)
            logging = self.log and self.step % self.cfg.log_every_steps == 0
            if logging or len(self.pending_losses) >= self.check_every:
                self._check_losses()
            if logging:
                self.log({"step": self.step, "tokens": self.tokens_seen, "loss_train": self.loss_train})
        self._check_losses()  # every loss read (and the device idle) before the caller times or saves

    def train_step(self, lrs) -> torch.Tensor:
        """One optimizer step on batch `self.step` at `lrs` (what `engine.step_lrs` gives); returns its
        cross-entropy (nats/token; 0-d solo, (K,) packed) on the device, so that nothing waits for the device
        here."""
        x, y = self._batch()
        self.engine.set_lr(lrs)
        losses = micro_batching.gradients(self, x, y)
        self.engine.update(losses, step=self.step)
        self.engine.zero_grad()
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

    def _compiles(self, *, moe: bool = False) -> bool:
        """Whether to compile the model (`resolve_compile`); 'auto' does not where compiling failed earlier in
        this process (the rows' `compile_error` says why)."""
        wanted = resolve_compile(self.cfg.compile, self.device, moe=moe)
        if wanted and self.cfg.compile == "auto":
            self.compile_error = compile_failed_here()
        return wanted and not self.compile_error

    def eager_if_compiling_fails(self, fn: Callable, *args):
        """fn(*args); where compiling fails on this machine and `compile` is 'auto', fn(*args) again in eager
        (the step's gradients start again, as after an out-of-memory error). With compile=True it is an
        error."""
        try:
            return fn(*args)
        except Exception as error:
            if not self.compiled or not _compile_error(error):
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
        self.engine.zero_grad()
        self.engine.uncompile()
        self.compiled, self.compile_error = False, reason
        return fn(*args)

    def memory_budget_bytes(self) -> int:
        """Bytes a step may use (micro_batching.memory_budget_bytes)."""
        return micro_batching.memory_budget_bytes(self.cfg, self.device)

    def _layer_seconds(self) -> float:
        """One layer's forward and backward of a micro-batch at the device's peak (where 'auto' picks CUDA
        graphs: compile_cache.resolve_compile_mode); 0 where it cannot matter, so no peak is measured
        there."""
        if self.device.type != "cuda" or self.cfg.compile_mode != "auto":
            return 0.0
        peak = peak_flops(self.device, compute_dtype(self.device, self.cfg.dtype))
        return layer_seconds(self.proxy, self.micro_batch_size * self.proxy.seq_len, peak)

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
        result = self.eager_if_compiling_fails(self._evaluate)
        self.eval_seconds += time.perf_counter() - start
        return result

    @torch.no_grad()
    def _evaluate(self) -> list[float]:
        self.engine.eval_mode(True)
        batches = eval_batches(
            self.corpus,
            seq_len=self.proxy.seq_len,
            batch_size=self.cfg.eval_batch_size,
            eval_tokens=self.cfg.data.eval_tokens,
        )
        total, windows = None, 0
        for x, y in batches:  # the last batch may hold fewer windows: weight by window count
            with self.autocast():
                losses = self.engine.eval_losses(x.to(self.device), y.to(self.device))
            part = losses.double() * x.shape[0]  # float64 sums on the device, read once at the end
            total, windows = part if total is None else total + part, windows + x.shape[0]
        self.engine.eval_mode(False)
        return (total / windows).reshape(self.k).tolist()

    def results(self, *, tokens: float) -> list[RunResult]:
        """One result row per variant for the budget `tokens`, evaluating the variants as they are now
        (proxy_models/result_rows.py)."""
        return result_rows(self, tokens=tokens)

    def execution(self) -> str:
        """How this object trained, as JSON text for the rows (result_rows.execution_record)."""
        return execution_record(self)

    def state_dict(self) -> dict:
        """The whole training state; tensors are live references (copy before training on)."""
        return {
            **self.engine.model_state(),
            "step": self.step,
            "first_loss": list(self.first_losses),
            "diverged_at": list(self.diverged_ats),
            "recent_losses": [list(w) for w in self.loss_windows],
            "train_seconds": self.train_seconds,
            "curve": self.curve.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.engine.load_model_state(state)
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


def _precision(dtype: str, device: torch.device):
    """(parameter dtype, autocast context factory) for the requested precision."""
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "bfloat16":
        return torch.float32, lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return DTYPES[dtype], lambda: torch.autocast(device.type, enabled=False)


def _compile_error(error: Exception) -> bool:
    """Whether `error` is torch.compile's. Its exception classes are imported here, where a compiled step
    failed: importing them imports all of torch._dynamo (0.6 s), which an eager run never needs."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(error, TorchDynamoException)
