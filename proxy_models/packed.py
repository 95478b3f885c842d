"""Packed variants: K runs that differ only in their schedule (lr, or Power a and b) trained in lockstep.

The K models' weights are stacked on a leading variant dimension and one `torch.func.vmap`-ed forward and
backward serves all of them on the same batch. Each variant has its own lr, its own gradient clipping and
its own divergence mask: a diverged variant stops updating and cannot disturb the others, since no
computation mixes variants. On a GPU this fills a chip that one 12M-parameter model leaves idle.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import replace

import torch
from torch.func import functional_call, vmap

from proxy_models.config import ConfigError
from proxy_models.curves import CurveRecorder
from proxy_models.data import TokenCorpus, load_corpus, train_batch
from proxy_models.model import Attention
from proxy_models.mup import is_hidden_matrix
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import RunResult, TrainConfig, Trainer


class PackedTrainer:
    """Trains `len(schedules)` variants of `config` at once; `results()` gives one RunResult each."""

    def __init__(self, config: TrainConfig, schedules: Sequence[ScheduleConfig], *,
                 corpus: TokenCorpus | None = None):
        if config.proxy.is_moe:
            raise ConfigError(f"model={config.model!r} is a mixture of experts: packing supports dense models; "
                              "use pack=1 for MoE")
        if config.micro_batch_size is not None:
            raise ConfigError("micro_batch_size with packing: unsupported; pack fewer variants instead")
        corpus = corpus if corpus is not None else load_corpus(config.data)
        # Solo trainers initialise each variant exactly as a solo run would, and later evaluate it.
        self.solo = [Trainer(replace(config, schedule=s), corpus=corpus) for s in schedules]
        self.cfg, self.corpus, self.k = config, corpus, len(schedules)
        self.model = copy.deepcopy(self.solo[0].model)  # stateless skeleton for functional_call
        for module in self.model.modules():
            if isinstance(module, Attention):
                module.use_sdpa = False
        self.model.head = "full"  # vmap has no rule for the chunked head's autograd.Function
        self.params = {name: torch.stack([dict(t.model.named_parameters())[name].detach() for t in self.solo])
                       .requires_grad_() for name, _ in self.model.named_parameters()}
        self.lr_scale = {n: (1 / config.proxy.m_width if is_hidden_matrix(n, p) else 1.0)
                         for n, p in self.model.named_parameters()}
        self.decay = {n: config.weight_decay if p.ndim >= 2 else 0.0 for n, p in self.model.named_parameters()}
        self.m = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in self.params.items()}
        self.step = 0
        self.first_loss = torch.full((self.k,), math.nan, dtype=torch.float64)
        self.diverged_at = torch.full((self.k,), math.nan, dtype=torch.float64)
        self.loss_history: list[torch.Tensor] = []
        self.train_seconds = 0.0
        self.curve = CurveRecorder.for_run(config, schedules)  # one curve per variant, restored by checkpoints
        self.steps_trained, self.seconds_trained = 0, 0.0  # what this object did (retry accounting)
        self.device = self.solo[0].device
        self.lr_dtype = torch.float64 if config.dtype == "float64" else torch.float32

    def _losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        def one(params):
            return functional_call(self.model, params, (x, y))[1]
        with self.solo[0].autocast():
            return vmap(one)(self.params)  # (K,)

    def train_step(self, lrs: torch.Tensor) -> torch.Tensor:
        """One lockstep step with per-variant lrs (K,); returns the K losses (nats/token)."""
        x, y = train_batch(self.corpus, step=self.step, batch_size=self.cfg.batch_size,
                           seq_len=self.cfg.proxy.seq_len, seed=self.cfg.seed)
        device = self.solo[0].device
        losses = self._losses(x.to(device), y.to(device))
        grads = torch.autograd.grad(losses.sum(), list(self.params.values()))
        self._adamw(dict(zip(self.params, grads)), lrs.to(device))
        self.step += 1
        return losses.detach().double().cpu()

    @torch.no_grad()
    def _adamw(self, grads: dict[str, torch.Tensor], lrs: torch.Tensor) -> None:
        """AdamW as torch.optim.AdamW computes it, vectorised over variants, after per-variant clipping."""
        cfg, t = self.cfg, self.step + 1
        active = torch.isnan(self.diverged_at).to(lrs.device)
        coef = self._clip_coef(grads) * active
        for name, p in self.params.items():
            g = torch.nan_to_num(grads[name]) * _bcast(coef, p)
            lr = _bcast(lrs * active, p) * self.lr_scale[name]
            p.mul_(1 - lr * self.decay[name])
            self.m[name].lerp_(g, 1 - cfg.beta1)
            self.v[name].mul_(cfg.beta2).addcmul_(g, g, value=1 - cfg.beta2)
            denom = (self.v[name].sqrt() / math.sqrt(1 - cfg.beta2**t)).add_(cfg.eps)
            p.sub_(lr / (1 - cfg.beta1**t) * self.m[name] / denom)

    def _clip_coef(self, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-variant global-norm clipping factor (K,), as clip_grad_norm_ applies it."""
        norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads.values()]).norm(dim=0)
        if self.cfg.grad_clip <= 0:
            return torch.ones_like(norms)
        return (self.cfg.grad_clip / (norms + 1e-6)).clamp(max=1.0)

    @property
    def diverged(self) -> bool:
        """Every variant diverged: nothing left to train."""
        return not torch.isnan(self.diverged_at).any()

    # The same loops and files as a solo run, so one lineage driver serves both.
    train_to = Trainer.train_to
    save_checkpoint = Trainer.save_checkpoint
    load_checkpoint = Trainer.load_checkpoint

    def _train_until(self, step: int, total_tokens: float | None) -> None:
        while self.step < step and not self.diverged:
            lrs = [t.lr_at_step(self.step, total_tokens=total_tokens) for t in self.solo]
            self._watch(self.train_step(torch.tensor(lrs, dtype=self.lr_dtype)))

    @property
    def eval_seconds(self) -> float:
        """Seconds the variants' evaluations took (they run in the solo trainers)."""
        return sum(t.eval_seconds for t in self.solo)

    def train(self) -> None:
        """Train every variant for the configured budget (each under its own schedule)."""
        self.train_to(self.cfg.steps, total_tokens=self.cfg.steps * self.cfg.tokens_per_step)

    def state_dict(self) -> dict:
        """The whole lockstep state; tensors are live references (copy before training on)."""
        history = torch.stack(self.loss_history) if self.loss_history else torch.empty(0, self.k, dtype=torch.float64)
        return {"params": {n: p.detach() for n, p in self.params.items()}, "m": self.m, "v": self.v,
                "step": self.step, "first_loss": self.first_loss, "diverged_at": self.diverged_at,
                "loss_history": history, "train_seconds": self.train_seconds, "curve": self.curve.state_dict()}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        for name, p in self.params.items():  # in place: the stacked parameters stay the autograd leaves
            p.copy_(state["params"][name])
            self.m[name].copy_(state["m"][name])
            self.v[name].copy_(state["v"][name])
        self.step, self.train_seconds = state["step"], state["train_seconds"]
        self.first_loss, self.diverged_at = state["first_loss"].clone(), state["diverged_at"].clone()
        self.loss_history = list(state["loss_history"].cpu().unbind(0))
        self.curve.load_state_dict(state.get("curve"), step=self.step)

    def _watch(self, losses: torch.Tensor) -> None:
        self.curve.watch(losses.tolist(), tokens=self.step * self.cfg.tokens_per_step)
        self.first_loss = torch.where(torch.isnan(self.first_loss), losses, self.first_loss)
        bad = ~torch.isfinite(losses) | (losses > self.cfg.divergence_factor * self.first_loss)
        newly = bad & torch.isnan(self.diverged_at)
        self.diverged_at[newly] = float(self.step * self.cfg.tokens_per_step)
        self.loss_history = (self.loss_history + [losses])[-self.cfg.log_every_steps:]

    def train_and_results(self) -> list[RunResult]:
        self.train()
        return self.results()

    def results(self, *, tokens: float | None = None) -> list[RunResult]:
        """Copy each variant's weights into its solo trainer and evaluate it there: one row per variant, for
        the budget `tokens` (default the configured one). Each row's tokens_per_s is its own tokens over the
        trial's wall time, so the trial's throughput is their sum over the variants."""
        rows = []
        window = torch.stack(self.loss_history) if self.loss_history else None
        for i, trainer in enumerate(self.solo):
            with torch.no_grad():
                for name, p in trainer.model.named_parameters():
                    p.copy_(self.params[name][i])
            trainer.step, trainer.diverged_at = self.step, float(self.diverged_at[i])
            trainer.first_loss = float(self.first_loss[i])
            trainer.recent_losses = window[:, i].tolist() if window is not None else []
            trainer.train_seconds = self.train_seconds
            rows.append(trainer.result(tokens=self.cfg.tokens if tokens is None else tokens))
        return rows


def _bcast(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) broadcasting against a stacked parameter."""
    return values.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))
