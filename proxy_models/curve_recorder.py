"""Training curves: which steps a run keeps, and the points (step, tokens, lr, train loss) it keeps there.

A curve costs hundreds of points, not millions. A segment (a lineage's trunk, or one budget's decay branch
from its fork) keeps every one of its first `first_steps` steps, then `per_decade` log-spaced steps per decade
of steps since the segment began; the lineage driver adds a point where a segment ends (a fork, a budget's
last step) and the held-out loss evaluated there. A decay branch's grid starts at its fork, so even a short
decay is drawn with tens of points.

Each train point holds the loss of its own step (`loss_train`) and the mean over the steps since the previous
grid point (`loss_train_mean` over `mean_steps` steps, the step itself included): a spike between two points
still shows in the mean.
Points added where a segment ends do not restart that mean, so every grid point is the same whatever forks a
run visited. The recorder's state is part of the trainer's checkpoint: a run resumed from it neither loses nor
repeats a point.

>>> grid = CurveGrid(first_steps=10, per_decade=40)
>>> len(grid.offsets(12_500)), len(grid.offsets(3_125))   # the main job's longest trunk and decay, in steps
(132, 108)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.shapes import ConfigError

TRUNK = "trunk"  # the segment shared by every budget of a lineage, up to each fork
DECAY = "decay"  # one budget's branch, from its fork to its last step
TRAIN, EVAL = "train", "eval"  # a point's kind: a training step's loss, or the held-out loss evaluated there
COLUMNS = (
    "segment",
    "budget",
    "fork_tokens",
    "kind",
    "step",
    "tokens",
    "lr",
    "loss_train",
    "loss_train_mean",
    "mean_steps",
    "loss_eval",
)


@dataclass(frozen=True)
class CurveGrid:
    """The steps a segment keeps, counted from the segment's start (offset 1 is its first step)."""

    first_steps: int = 10  # every one of the segment's first steps (the loss falls fastest there)
    per_decade: int = 40  # then this many log-spaced steps per decade: 12,500 steps keep 132 points

    def __post_init__(self) -> None:
        for name in ("first_steps", "per_decade"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"curve grid {name}={value!r}: must be a whole number >= 1")

    def next_after(self, offset: int) -> int:
        """The smallest grid offset above `offset`:
        offsets up to first_steps, then round(10 ** (k / per_decade))."""
        if offset < self.first_steps:
            return offset + 1
        k = math.floor(self.per_decade * math.log10(offset)) - 1  # one below: log10 may round up at a power
        while (step := round(10 ** (k / self.per_decade))) <= offset:
            k += 1
        return step

    def offsets(self, steps: int) -> list[int]:
        """The offsets a segment of `steps` steps keeps: the grid's up to `steps`, and `steps` itself."""
        kept, offset = [], 0
        while (offset := self.next_after(offset)) < steps:
            kept.append(offset)
        return kept + [steps] if steps >= 1 else []


DEFAULT_GRID = CurveGrid()


class CurveRecorder:
    """Keeps a run's curve points; one curve per variant (a packed run trains several schedules at once).

    The trainer calls `watch` once per step with that step's loss(es); the lineage driver calls `begin` at a
    fork, `close` and `add_eval` where a segment ends, and `points` to hand the segment's points on. With
    `grid=None` it keeps nothing (curves off).
    """

    def __init__(
        self,
        schedules: Sequence[ScheduleConfig],
        *,
        tokens_per_step: int,
        batch_size: int,
        total_tokens: float,
        grid: CurveGrid | None = DEFAULT_GRID,
    ):
        self.schedules, self.grid = list(schedules), grid
        self.tokens_per_step, self.batch_size = tokens_per_step, batch_size
        self._start(TRUNK, budget=math.nan, start_step=0, total_tokens=total_tokens)

    @classmethod
    def for_run(
        cls,
        config,
        schedules: Sequence[ScheduleConfig] | None = None,
        *,
        grid: CurveGrid | None = DEFAULT_GRID,
    ) -> CurveRecorder:
        """The recorder of a trainer of `config` (a TrainConfig): its trunk runs to the configured budget."""
        tps = config.tokens_per_step
        return cls(
            schedules or [config.schedule],
            tokens_per_step=tps,
            batch_size=config.batch_size,
            total_tokens=config.steps * tps,
            grid=grid,
        )

    @property
    def variants(self) -> int:
        return len(self.schedules)

    def set_grid(self, grid: CurveGrid | None) -> None:
        """Use `grid` (None: keep nothing) from the start of the trunk; before any step is watched."""
        assert self.step == 0 and self.segment == TRUNK, "set the grid before training"
        self.grid = grid
        self._start(TRUNK, budget=math.nan, start_step=0, total_tokens=self.total_tokens)

    def _start(self, segment: str, *, budget: float, start_step: int, total_tokens: float) -> None:
        self.segment, self.budget, self.start_step, self.total_tokens = (
            segment,
            budget,
            start_step,
            total_tokens,
        )
        self.step, self.kept_step = start_step, -1  # the last step watched, the last train point's step
        self.next_step = start_step + self.grid.next_after(0) if self.grid else 0
        self.columns: dict[str, list] = {
            name: [] for name in ("kind", "step", "lr", "loss", "mean", "n", "eval")
        }
        self._restart_mean()

    def _restart_mean(self) -> None:
        self.loss_sum, self.mean_steps, self.last_loss = (
            [0.0] * len(self.schedules),
            0,
            [math.nan] * len(self.schedules),
        )

    def watch(self, loss: float | Sequence[float], *, tokens: int) -> None:
        """The loss (one per variant) of the step that ended at `tokens` seen; keeps a point on the grid."""
        if self.grid is None:
            return
        losses = [loss] if isinstance(loss, float) else list(loss)
        self.step = tokens // self.tokens_per_step
        self.loss_sum = [s + x for s, x in zip(self.loss_sum, losses)]
        self.mean_steps += 1
        self.last_loss = losses
        if self.step == self.next_step:
            self._keep(self.step)
            self._restart_mean()
            self.next_step = self.start_step + self.grid.next_after(self.step - self.start_step)

    def _keep(self, step: int) -> None:
        tokens, self.kept_step = step * self.tokens_per_step, step
        self.columns["kind"].append(TRAIN)
        self.columns["step"].append(step)
        self.columns["lr"].append(
            [
                s.lr_at(tokens, total_tokens=self.total_tokens, batch_size=self.batch_size)
                for s in self.schedules
            ]
        )
        self.columns["loss"].append(list(self.last_loss))
        self.columns["mean"].append([s / self.mean_steps for s in self.loss_sum])
        self.columns["n"].append(self.mean_steps)
        self.columns["eval"].append([math.nan] * len(self.schedules))

    def close(self) -> None:
        """A point at the last step watched, where a segment ends (a fork, a budget's last step), unless there
        is one. It does not restart the mean: the next grid point's mean is the same with or without it."""
        if self.grid is None or not self.mean_steps or self.kept_step == self.step:
            return
        self._keep(self.step)

    def add_eval(self, step: int, losses: Sequence[float]) -> None:
        """The held-out loss (one per variant) evaluated after `step` steps."""
        if self.grid is None:
            return
        nan = [math.nan] * len(self.schedules)
        for name, value in (
            ("kind", EVAL),
            ("step", step),
            ("lr", nan),
            ("loss", nan),
            ("mean", nan),
            ("n", 0),
            ("eval", list(losses)),
        ):
            self.columns[name].append(value)

    def begin(self, budget: float, *, fork_step: int, total_tokens: float) -> None:
        """Start the decay branch of the budget `budget` (tokens) at the trunk's step `fork_step`, under the
        schedule of a run of `total_tokens`. The trunk's points come back with `load_state_dict`."""
        self._start(DECAY, budget=float(budget), start_step=fork_step, total_tokens=total_tokens)

    def points(self, variant: int = 0) -> list[dict]:
        """The current segment's points of one variant, oldest first, as dicts with the keys of COLUMNS
        (tokens seen, lr, losses in nats/token; `budget` and `fork_tokens` NaN on the trunk; `mean_steps` 0 on
        eval points)."""
        c, tps = self.columns, self.tokens_per_step
        fork = math.nan if self.segment == TRUNK else float(self.start_step * tps)
        return [
            {
                "segment": self.segment,
                "budget": self.budget,
                "fork_tokens": fork,
                "kind": kind,
                "step": step,
                "tokens": step * tps,
                "lr": lr[variant],
                "loss_train": loss[variant],
                "loss_train_mean": mean[variant],
                "mean_steps": n,
                "loss_eval": ev[variant],
            }
            for kind, step, lr, loss, mean, n, ev in zip(
                c["kind"], c["step"], c["lr"], c["loss"], c["mean"], c["n"], c["eval"]
            )
        ]

    def state_dict(self) -> dict:
        """Plain lists and numbers (loads with torch.load(weights_only=True))."""
        return {
            "segment": self.segment,
            "budget": self.budget,
            "start_step": self.start_step,
            "total_tokens": float(self.total_tokens),
            "step": self.step,
            "next_step": self.next_step,
            "kept_step": self.kept_step,
            "columns": {k: list(v) for k, v in self.columns.items()},
            "loss_sum": list(self.loss_sum),
            "mean_steps": self.mean_steps,
            "last_loss": list(self.last_loss),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()`."""
        self.segment, self.budget, self.start_step = state["segment"], state["budget"], state["start_step"]
        self.total_tokens, self.step, self.next_step = (
            state["total_tokens"],
            state["step"],
            state["next_step"],
        )
        self.kept_step = state["kept_step"]
        self.columns = {k: list(v) for k, v in state["columns"].items()}
        self.loss_sum, self.mean_steps = list(state["loss_sum"]), state["mean_steps"]
        self.last_loss = list(state["last_loss"])
