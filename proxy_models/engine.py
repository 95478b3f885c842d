"""The model side of a training loop, as the loop calls it: one model, or K packed variants.

`TrainingLoop` (proxy_models/loop.py) owns everything but the model: batches, lrs, micro-batches and
out-of-memory halving, the loss watch, evaluation, rows and checkpoints. It calls an `Engine` for the rest,
through exactly the operations declared here. Two engines implement it: `SoloEngine` (proxy_models/trainer.py:
a ProxyLM and torch's AdamW) and `PackedEngine` (proxy_models/packed.py: K variants in one (K, P) buffer, a
batched forward and one AdamW over all of them). An engine is built by the loop, from the run's config, the
device, the parameter dtype and each variant's seed (`EngineFactory`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    import torch

    from powersweep.proxy_models.train_config import TrainConfig


class Engine(Protocol):
    packed: ClassVar[bool]  # K variants in one set of tensors: their kernels never wait on the host
    checkpointing: bool  # activation checkpointing of the blocks (the micro-batch plan sets it)

    def step_lrs(self, lrs: list[float]) -> Any:
        """Each variant's lr of the next step (the schedules'), as `set_lr` takes them; called before the
        step's batch is made, so a copy to the device overlaps it."""

    def set_lr(self, lrs: Any) -> None:
        """Train the next step at `lrs` (what `step_lrs` made)."""

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what to backpropagate, each variant's cross-entropy: 0-d solo, (K,) packed) of one micro-batch,
        under the loop's autocast."""

    def backward(self, objective: torch.Tensor) -> None:
        """Add the micro-batch's gradients to the step's."""

    def update(self, losses: torch.Tensor, *, step: int) -> None:
        """Apply the step's gradients (clipped) with AdamW; `losses` are the step's, `step` the steps done
        before it."""

    def zero_grad(self) -> None:
        """Drop (or zero) the gradients, for the next step or a step started again."""

    def eval_losses(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each variant's cross-entropy on a held-out batch (no gradients)."""

    def eval_mode(self, on: bool) -> None:
        """Switch between training and evaluation behaviour."""

    def compile(self, mode: str, scope: str) -> None:
        """torch.compile the blocks (or the trunk) in `mode` (proxy_models/compile_cache.py)."""

    def uncompile(self) -> None:
        """Train eager from now on."""

    def model_state(self) -> dict:
        """Weights and optimizer state, live tensors (the loop copies them into a checkpoint)."""

    def load_model_state(self, state: dict) -> None:
        """Restore `model_state()` from a checkpoint `state` of the loop (its per-variant losses too)."""


class EngineFactory(Protocol):
    def __call__(
        self, config: TrainConfig, *, device: torch.device, param_dtype: torch.dtype, seeds: Sequence[int]
    ) -> Engine: ...
