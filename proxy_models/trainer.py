"""One proxy run: a ProxyLM trained with AdamW (muP groups) by the training loop (proxy_models/loop.py).

`Trainer(config).run()` trains the configured budget and returns its result row; lineages call `train_to`
and `results`. `SoloEngine` is the model side the loop calls (proxy_models/engine.py): the model, torch's
fused AdamW over the muP parameter groups, gradient clipping and compiling.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch

from powersweep.proxy_models import checkpoint
from powersweep.proxy_models.compile_cache import compile_model, uncompile_model
from powersweep.proxy_models.data import TokenCorpus
from powersweep.proxy_models.loop import TrainingLoop
from powersweep.proxy_models.model import ProxyLM
from powersweep.proxy_models.mup import param_groups, set_lr
from powersweep.proxy_models.train_config import CUDA_GRAPH_MODES, TrainConfig
from powersweep.rows import RunResult


class SoloEngine:
    """One ProxyLM and its AdamW: the Engine of a solo run."""

    packed: ClassVar[bool] = False

    def __init__(
        self, config: TrainConfig, *, device: torch.device, param_dtype: torch.dtype, seeds: Sequence[int]
    ):
        self.cfg, self.proxy, self.device = config, config.proxy, device
        torch.manual_seed(seeds[0])
        self.model = ProxyLM(self.proxy, moe_backend=config.moe_backend, head=config.head)
        self.model.to(device, param_dtype)
        self.params = list(self.model.parameters())  # listed once: walking the modules each step shows
        self.optimizer = torch.optim.AdamW(
            param_groups(self.model, m_width=self.proxy.m_width, weight_decay=config.weight_decay),
            lr=0.0,
            betas=(config.beta1, config.beta2),
            eps=config.eps,
            fused=True,  # one kernel per group
        )
        self.compiled_mode: str | None = None  # torch.compile's mode of the blocks; None: eager

    @property
    def checkpointing(self) -> bool:
        """Activation checkpointing of the blocks."""
        return self.model.activation_checkpointing

    @checkpointing.setter
    def checkpointing(self, on: bool) -> None:
        self.model.activation_checkpointing = on

    def step_lrs(self, lrs: list[float]) -> float:
        return lrs[0]

    def set_lr(self, lrs: float) -> None:
        set_lr(self.optimizer, lrs)

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to backpropagate, the cross-entropy): MoE adds its load-balancing loss."""
        _, loss = self.model(x, y)
        return (
            loss + self.proxy.router_aux_loss * self.model.aux_loss() if self.proxy.is_moe else loss
        ), loss

    def backward(self, objective: torch.Tensor) -> None:
        objective.backward()

    def update(self, losses: torch.Tensor, *, step: int) -> None:
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optimizer.step()

    @property
    def graphed(self) -> bool:
        """Whether the compiled blocks replay as CUDA graphs."""
        return self.device.type == "cuda" and self.compiled_mode in CUDA_GRAPH_MODES

    def zero_grad(self) -> None:
        # A CUDA-graph replay writes its gradients into memory that the next replay reuses, and autograd keeps
        # a first gradient as `.grad` without copying it (pytorch/pytorch#169545): the next micro-batch would
        # overwrite it. Gradients kept allocated and zeroed in place take each micro-batch's gradient as a
        # sum; they are allocated at the first call (the loop's, before its first step).
        if self.graphed and self.params[0].grad is None:
            for p in self.params:
                p.grad = torch.zeros_like(p)
        self.optimizer.zero_grad(set_to_none=not self.graphed)

    def eval_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.model(x, y)[1]

    def eval_mode(self, on: bool) -> None:
        self.model.train(not on)

    def compile(self, mode: str, scope: str) -> None:
        """The blocks (or the trunk) only: the head's loss is already one pass per chunk."""
        compile_model(self.model, mode=mode, scope=scope)
        self.compiled_mode = mode

    def uncompile(self) -> None:
        uncompile_model(self.model)
        self.compiled_mode = None

    def model_state(self) -> dict:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_model_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class Trainer(TrainingLoop):
    """Trains one proxy model. `run()` does the whole run; lineages call `train_to` and `results`."""

    def __init__(
        self, config: TrainConfig, *, corpus: TokenCorpus | None = None, log: Callable | None = None
    ):
        super().__init__(config, (config.schedule,), SoloEngine, seeds=None, corpus=corpus, log=log)

    @property
    def model(self) -> ProxyLM:
        return self.engine.model

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.engine.params

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
        self.train(checkpoint_path=checkpoint_path, checkpoint_every_steps=checkpoint_every_steps)
        result = self.result(tokens=self.cfg.tokens)
        if checkpoint_path:
            checkpoint.wait(checkpoint_path)
        return result
