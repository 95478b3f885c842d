"""Learning-rate schedules as pure functions of tokens seen, and thin torch adapters over them.

WSD is Eq. 2 and Power Eq. 7-8 of the Power Scheduler paper (Shen et al., arXiv 2408.13359), with n counted
in tokens. IBM's lm-engine power scheduler folds the batch size into `a` and has no decay phase; ours keeps
batch_size explicit (in sequences) and implements Eq. 8 fully, decay included.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import AfterValidator, BeforeValidator

from powersweep.proxy_models.settings import (
    Fraction,
    Positive,
    TokenCount,
    at_least,
    check_settings,
    number,
    one_of,
    spec_setting,
)
from powersweep.proxy_models.shapes import ConfigError

DECAY_SHAPES = ("linear", "cosine", "exp", "1-sqrt")
SCHEDULES = ("constant", "cosine", "wsd", "power")


def _negative(value: float) -> float:
    if value >= 0:
        raise ValueError("must be negative (the paper uses -0.51)")
    return value


DecayShape = Annotated[str, one_of(DECAY_SHAPES, "decay shape")]
Negative = Annotated[float, BeforeValidator(number), AfterValidator(_negative)]
ClosedFraction = Annotated[float, BeforeValidator(number), at_least(0, high=1, what="fraction")]
# exp decay follows r**progress (shifted to end at the floor); r = 1e-2 ends near 0 smoothly
EXP_DECAY_RATIO = 1e-2


def decay_factor(progress: float, *, shape: str, floor: float = 0.0) -> float:
    """Multiplier of the pre-decay lr at `progress` in [0, 1] through the decay: 1 at 0, `floor` at 1."""
    p = min(max(progress, 0.0), 1.0)
    if shape == "linear":
        f = 1.0 - p
    elif shape == "cosine":
        f = 0.5 * (1.0 + math.cos(math.pi * p))
    elif shape == "1-sqrt":  # Hägele et al. 2024
        f = 1.0 - math.sqrt(p)
    elif shape == "exp":
        f = (EXP_DECAY_RATIO**p - EXP_DECAY_RATIO) / (1.0 - EXP_DECAY_RATIO)
    else:
        raise ConfigError(f"decay_shape={shape!r}: choose one of {DECAY_SHAPES}")
    return floor + (1.0 - floor) * f


def power_lr(tokens: float, *, batch_size: int, a: float, b: float, lr_max: float) -> float:
    """Eq. 7: min(lr_max, batch_size * a * tokens**b); the cap holds at tokens <= 0."""
    if tokens <= 0:
        return lr_max
    return min(lr_max, batch_size * a * tokens**b)


def _warmup(tokens: float, warmup_tokens: float) -> float:
    return tokens / warmup_tokens if tokens < warmup_tokens else 1.0


def constant(tokens: float, *, lr: float, warmup_tokens: float = 0.0) -> float:
    return lr * _warmup(tokens, warmup_tokens)


def cosine(
    tokens: float,
    *,
    lr: float,
    total_tokens: float,
    warmup_tokens: float = 0.0,
    final_lr_fraction: float = 0.1,
) -> float:
    """Linear warmup, then a half cosine from lr to final_lr_fraction * lr at total_tokens."""
    if tokens < warmup_tokens:
        return lr * tokens / warmup_tokens
    progress = (tokens - warmup_tokens) / max(total_tokens - warmup_tokens, 1e-12)
    return lr * decay_factor(progress, shape="cosine", floor=final_lr_fraction)


def wsd(
    tokens: float,
    *,
    lr: float,
    total_tokens: float,
    warmup_tokens: float = 0.0,
    decay_fraction: float = 0.1,
    decay_shape: str = "linear",
    decay_floor: float = 0.0,
) -> float:
    """Eq. 2: warmup n / N_warmup * lr, stable lr, then decay over the last decay_fraction of total_tokens."""
    decay_start = (1.0 - decay_fraction) * total_tokens
    if tokens <= decay_start:
        return lr * _warmup(tokens, warmup_tokens)
    progress = (tokens - decay_start) / (total_tokens - decay_start)
    return lr * decay_factor(progress, shape=decay_shape, floor=decay_floor)


def power(
    tokens: float,
    *,
    batch_size: int,
    a: float,
    b: float,
    lr_max: float,
    warmup_tokens: float = 0.0,
    total_tokens: float | None = None,
    decay_fraction: float = 0.0,
    decay_shape: str = "exp",
    decay_floor: float = 0.0,
) -> float:
    """Eq. 8: warmup to power_lr(N_warmup), then power_lr(n), then a decay of power_lr(N - N_decay).

    Without a budget (total_tokens None) or with decay_fraction 0 there is no decay phase, and the schedule
    depends on no budget at all.
    """
    lr_n = lambda n: power_lr(n, batch_size=batch_size, a=a, b=b, lr_max=lr_max)  # noqa: E731
    decay_start = (
        math.inf if total_tokens is None or decay_fraction == 0 else (1 - decay_fraction) * total_tokens
    )
    if tokens < warmup_tokens:
        return tokens / warmup_tokens * lr_n(warmup_tokens)
    if tokens <= decay_start:
        return lr_n(tokens)
    progress = (tokens - decay_start) / (total_tokens - decay_start)
    return decay_factor(progress, shape=decay_shape, floor=decay_floor) * lr_n(decay_start)


@dataclass(frozen=True)
class ScheduleConfig:
    """A schedule and its hyperparameters; `lr_at(tokens, total_tokens=..., batch_size=...)` evaluates it."""

    name: Literal[SCHEDULES] = spec_setting("wsd", key="schedule")  # constant | cosine | wsd | power
    lr: Positive = 1e-2  # peak lr of constant, cosine and wsd (unused by power)
    warmup_tokens: TokenCount = spec_setting(0.0)  # linear warmup length, in tokens
    # share of each budget spent decaying (wsd, power), in [0, 1); 0 = no decay
    decay_fraction: Fraction = spec_setting(0.1)
    decay_shape: DecayShape = spec_setting("linear")  # linear | cosine | exp | 1-sqrt
    decay_floor: Fraction = 0.0  # fraction of the pre-decay lr reached at the end of the decay
    power_a: Positive = 4.0  # Power a (Sec. 4: a = 4, b = -0.51, lr_max = 0.02)
    power_b: Negative = -0.51  # Power b
    lr_max: Positive = 0.02  # Power cap on the lr
    final_lr_fraction: ClosedFraction = 0.1  # cosine: final lr as a fraction of the peak

    def __post_init__(self) -> None:
        check_settings(self)

    def validate(self, *, total_tokens: float) -> None:
        """Check that warmup ends before the decay of a run of `total_tokens` starts."""
        if self.name in ("wsd", "power") and self.warmup_tokens > self.fork_point(total_tokens):
            raise ConfigError(
                f"warmup_tokens={self.warmup_tokens:g} exceeds the decay start "
                f"{self.fork_point(total_tokens):g} of a {total_tokens:g}-token run: raise tokens or "
                "shorten the warmup"
            )

    def lr_at(self, tokens: float, *, total_tokens: float | None, batch_size: int) -> float:
        """The lr after `tokens` tokens of a run of `total_tokens` (None: no budget, no decay)."""
        if self.name == "constant":
            return constant(tokens, lr=self.lr, warmup_tokens=self.warmup_tokens)
        if self.name == "power":
            return power(
                tokens,
                batch_size=batch_size,
                a=self.power_a,
                b=self.power_b,
                lr_max=self.lr_max,
                warmup_tokens=self.warmup_tokens,
                total_tokens=total_tokens,
                decay_fraction=self.decay_fraction,
                decay_shape=self.decay_shape,
                decay_floor=self.decay_floor,
            )
        if total_tokens is None:
            raise ConfigError(f"schedule={self.name!r} needs the run's total_tokens")
        if self.name == "cosine":
            return cosine(
                tokens,
                lr=self.lr,
                total_tokens=total_tokens,
                warmup_tokens=self.warmup_tokens,
                final_lr_fraction=self.final_lr_fraction,
            )
        return wsd(
            tokens,
            lr=self.lr,
            total_tokens=total_tokens,
            warmup_tokens=self.warmup_tokens,
            decay_fraction=self.decay_fraction,
            decay_shape=self.decay_shape,
            decay_floor=self.decay_floor,
        )

    def peak_lr(self, *, batch_size: int) -> float:
        """The largest lr the schedule reaches: lr, or for power its value at the end of warmup."""
        if self.name != "power":
            return self.lr
        return power_lr(
            self.warmup_tokens, batch_size=batch_size, a=self.power_a, b=self.power_b, lr_max=self.lr_max
        )

    def fork_point(self, total_tokens: float) -> float:
        """Tokens before which the schedule is the same for every budget:
        where the decay of this one starts."""
        if self.name == "cosine":
            return 0.0
        if self.name == "constant":
            return total_tokens
        return (1.0 - self.decay_fraction) * total_tokens


def lr_lambda(
    schedule: ScheduleConfig, *, tokens_per_step: int, batch_size: int, total_tokens: float | None
) -> Callable[[int], float]:
    """lr of optimizer step k (0-based), taken at (k + 1) * tokens_per_step: the tokens seen after the step.

    So the first warmup step is not 0 and the power law never sees n = 0.
    """
    return lambda step: schedule.lr_at(
        (step + 1) * tokens_per_step, total_tokens=total_tokens, batch_size=batch_size
    )


def torch_scheduler(
    optimizer, schedule: ScheduleConfig, *, tokens_per_step: int, batch_size: int, total_tokens: float | None
):
    """A LambdaLR whose group lrs are (the group's initial lr, e.g. its muP scale) * schedule lr."""
    from torch.optim.lr_scheduler import LambdaLR

    return LambdaLR(
        optimizer,
        lr_lambda(
            schedule, tokens_per_step=tokens_per_step, batch_size=batch_size, total_tokens=total_tokens
        ),
    )


def __getattr__(name: str):
    # PowerScheduler subclasses torch's LRScheduler: built on first use, so that planning imports no torch
    if name == "PowerScheduler":
        return _power_scheduler_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def read_scheduler_coefficients(path: str, *, lr_max: float | None = None) -> dict:
    """a, b and lr_max for a PowerScheduler from a coefficients.json that `powersweep analyze` wrote: the
    pooled law's a and b, and `lr_max` (given, else the file's: half the smallest lr that diverged at the
    largest batch size; null when no run diverged, and then one must be given)."""
    with open(path) as f:
        coefficients = json.load(f)
    missing = [k for k in ("a", "b") if coefficients.get(k) is None]
    if missing:
        raise ConfigError(f"coefficients file {path!r} lacks {missing}: write it with `powersweep analyze`")
    lr_max = coefficients.get("lr_max") if lr_max is None else lr_max
    if lr_max is None:
        raise ConfigError(
            f"lr_max=None: coefficients file {path!r} has no lr_max (no run of the sweep diverged): pass "
            "lr_max=..., e.g. the largest lr the sweep trained at your batch size"
        )
    return {"a": coefficients["a"], "b": coefficients["b"], "lr_max": lr_max}


@functools.cache
def _power_scheduler_class():
    from torch.optim.lr_scheduler import LRScheduler

    class PowerScheduler(LRScheduler):
        """The Power scheduler (Eq. 8) for any torch optimizer: it sets each group's lr to
        ``group.get("lr_scale", 1.0) * lr(n)`` at optimizer step k, n = (k + 1) * batch_size * seq_len tokens
        seen after the step, where lr(n) is a linear warmup over ``warmup_tokens`` to
        min(lr_max, batch_size * a * n**b), then that law (then a decay, with ``total_tokens`` and
        ``decay_fraction``). The optimizer's own lr is replaced, not multiplied: a per-group multiplier (e.g.
        muP's 1 / m_width, as `mup.param_groups` writes it) goes in the group's ``lr_scale``.

        >>> opt = torch.optim.AdamW(model.parameters())
        >>> sched = PowerScheduler(opt, batch_size=1024, seq_len=4096, a=4.6, b=-0.51, lr_max=0.02,
        ...                        warmup_tokens=1e9)
        """

        def __init__(
            self,
            optimizer,
            *,
            batch_size: int,
            seq_len: int,
            a: float,
            b: float,
            lr_max: float,
            warmup_tokens: float = 0.0,
            total_tokens: float | None = None,
            decay_fraction: float = 0.0,
            decay_shape: str = "exp",
            last_epoch: int = -1,
        ):
            for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
                if not (isinstance(value, int) and value > 0):
                    raise ConfigError(
                        f"{name}={value!r}: must be a positive whole number (sequences, tokens)"
                    )
            _check_group_lrs(optimizer)
            self.schedule = ScheduleConfig(
                name="power",
                power_a=a,
                power_b=b,
                lr_max=lr_max,
                warmup_tokens=warmup_tokens,
                decay_fraction=decay_fraction,
                decay_shape=decay_shape,
            )
            if total_tokens is not None:
                self.schedule.validate(total_tokens=total_tokens)
            self.lr_at_step = lr_lambda(
                self.schedule,
                tokens_per_step=batch_size * seq_len,
                batch_size=batch_size,
                total_tokens=total_tokens,
            )
            super().__init__(optimizer, last_epoch)

        def get_lr(self) -> list[float]:
            lr = self.lr_at_step(self.last_epoch)
            return [group.get("lr_scale", 1.0) * lr for group in self.optimizer.param_groups]

        def state_dict(self) -> dict:
            """The step and last lrs; the schedule is the constructor's, so a checkpoint holds no function."""
            return {
                k: v for k, v in self.__dict__.items() if k not in ("optimizer", "schedule", "lr_at_step")
            }

        def load_state_dict(self, state_dict: dict) -> None:
            """Resume at the saved step, the optimizer's lrs set for it (its own state need not be loaded)."""
            super().load_state_dict(state_dict)
            self._last_lr = self.get_lr()
            for group, lr in zip(self.optimizer.param_groups, self._last_lr):
                group["lr"] = lr

        @classmethod
        def from_coefficients(
            cls,
            path: str,
            optimizer,
            *,
            batch_size: int,
            seq_len: int,
            lr_max: float | None = None,
            warmup_tokens: float = 0.0,
            total_tokens: float | None = None,
            decay_fraction: float = 0.0,
            decay_shape: str = "exp",
        ):
            """A PowerScheduler with the a and b of a coefficients.json (`read_scheduler_coefficients`),
            capped at `lr_max` (default: the file's); the other options as the constructor's."""
            return cls(
                optimizer,
                batch_size=batch_size,
                seq_len=seq_len,
                **read_scheduler_coefficients(path, lr_max=lr_max),
                warmup_tokens=warmup_tokens,
                total_tokens=total_tokens,
                decay_fraction=decay_fraction,
                decay_shape=decay_shape,
            )

    PowerScheduler.__module__, PowerScheduler.__qualname__ = __name__, "PowerScheduler"
    return PowerScheduler


def _check_group_lrs(optimizer) -> None:
    """A group that sets an lr of its own without an lr_scale meant that lr as its multiplier; the scheduler
    would replace it, so it is refused."""
    default = optimizer.defaults.get("lr")
    for i, group in enumerate(optimizer.param_groups):
        if "lr_scale" not in group and group["lr"] != default:
            raise ConfigError(
                f"param group {i} has lr={group['lr']:g} (the optimizer's is {default:g}) and no lr_scale: "
                "PowerScheduler sets each group's lr to its lr_scale times the schedule's lr, replacing the "
                f"optimizer's; put the group's multiplier in its 'lr_scale' (e.g. lr_scale={group['lr']:g})"
            )
