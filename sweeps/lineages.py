"""Lineages: a sweep's units of training (one trajectory through several token budgets) and their ids.

`lineage_id` hashes everything that determines a training trajectory except its length; `run_id` hashes
the lineage_id and one token budget. Neither depends on the other values of a grid, so adding values to
a spec and running it again finds every finished run_id in the store and runs only the new cells. A trunk
evaluation's id hashes the lineage_id and the fork's tokens. `settings_id` hashes a run's training settings
apart from its cell and searched values. Every sweep mode makes its lineages here, so they share these ids.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields, is_dataclass, replace

from powersweep.proxy_models.budgets import plan_branches, trunk_tokens
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.settings import id_defaults
from powersweep.proxy_models.train_config import EXECUTION_FIELDS, TrainConfig
from powersweep.sweeps.spec import SweepSpec, settings_for

SEARCHED = ("lr", "power_a", "power_b", "lr_max")  # schedule fields a pack's variants may differ in


@dataclass(frozen=True)
class LineageJob:
    """One Ray trial: a lineage (one trajectory, several token budgets) and the run_id of each budget."""

    lineage_id: str  # deterministic id of the trajectory's resolved config
    config: TrainConfig  # tokens = the largest budget
    budgets: tuple[float, ...]  # token budgets to evaluate, ascending
    run_ids: tuple[str, ...]  # one per budget, same order
    trunk_tokens: tuple[int, ...] = ()  # tokens seen at each trunk evaluation (fork points), ascending
    trunk_run_ids: tuple[str, ...] = ()  # one per trunk evaluation, same order

    @property
    def row_ids(self) -> tuple[str, ...]:
        """Every row the lineage writes: budget results, then trunk evaluations."""
        return self.run_ids + self.trunk_run_ids


def short_hash(obj) -> str:
    return hashlib.sha256(_ENCODER.encode(obj).encode()).hexdigest()[:16]


# json.dumps(obj, sort_keys=True, default=str), made once: a plan hashes a dozen ids per lineage
_ENCODER = json.JSONEncoder(sort_keys=True, default=str)


def _identity(config: TrainConfig) -> dict:
    """What determines a trajectory: the resolved config less its length and how it executes."""
    excluded = ("tokens", "log_every_steps", "device", *EXECUTION_FIELDS)  # how a run executes is not its id
    return {f.name: plain(getattr(config, f.name)) for f in fields(config) if f.name not in excluded}


def plain(value):
    """`dataclasses.asdict`'s values without its deep copies (a plan hashes a config per lineage): nested
    dataclasses as dicts, containers rebuilt, everything else as it is; a field that ids hash only when set
    (`settings.id_defaults`) is left out while it holds its default."""
    names = _field_names(type(value))
    if names is not None:
        unset = id_defaults(type(value))
        return {
            name: plain(getattr(value, name))
            for name in names
            if name not in unset or getattr(value, name) != unset[name]
        }
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    return value


@functools.cache
def _field_names(cls: type) -> tuple[str, ...] | None:
    """The fields of a dataclass type, in order; None for any other type."""
    return tuple(f.name for f in fields(cls)) if is_dataclass(cls) else None


def settings_id(config: TrainConfig) -> str:
    """Hash of a run's training settings other than its cell and searched values (model, batch size, seed; lr
    or power a, b, lr_max): runs with equal settings_id differ only in those, so analysis may average or
    compare them; runs whose settings_id differ (another warmup, optimizer, corpus...) never share a cell."""
    identity = _identity(config)
    identity["schedule"] = {k: v for k, v in identity["schedule"].items() if k not in SEARCHED}
    for name in ("model", "batch_size", "seed"):
        del identity[name]
    return short_hash(["settings", identity])


def lineage_job(config: TrainConfig, budgets: tuple[float, ...]) -> LineageJob:
    identity = _identity(config)
    identity["compile"] = False  # an execution detail now; every id made before it was one hashed False
    if len(budgets) == 1 and config.schedule.name == "cosine":
        identity["tokens"] = budgets[0]  # a cosine trajectory is tied to its budget
    lineage_id = short_hash(identity)
    trunk = tuple(trunk_tokens(config, budgets))
    return LineageJob(
        lineage_id,
        config,
        budgets,
        tuple(short_hash([lineage_id, t]) for t in budgets),
        trunk,
        tuple(trunk_row_id(lineage_id, t) for t in trunk),
    )


def trunk_row_id(lineage_id: str, tokens: int) -> str:
    """run_id of the trunk evaluation at `tokens` (the fork's tokens seen)."""
    return short_hash([lineage_id, "trunk", tokens])


def lineage_jobs(config: TrainConfig, budgets: tuple[float, ...]) -> list[LineageJob]:
    """One lineage through `budgets`, or one per budget where they share no trunk (cosine)."""
    if all(b.fork_step == 0 for b in plan_branches(config, budgets)) and len(budgets) > 1:
        return [lineage_job(replace(config, tokens=t), (t,)) for t in budgets]
    longest = config if config.tokens == max(budgets) else replace(config, tokens=max(budgets))
    return [lineage_job(longest, budgets)]


def trajectories(
    spec: SweepSpec, longest: float, schedules: Sequence[ScheduleConfig]
) -> Iterator[TrainConfig]:
    """One TrainConfig per combination of model, parametrisation, batch size, seed and schedule (its lr, or
    power a, b and lr_max), with every setting of the spec's `train:` and `run:` sections
    (proxy_models/settings.py)."""
    s, t = spec.search, spec.train
    settings = {**settings_for(t, TrainConfig), **settings_for(spec.run, TrainConfig)}
    overrides = {**t.model_overrides, **({"seq_len": t.seq_len} if t.seq_len else {})}
    for model, parametrisation, batch_size, seed, schedule in itertools.product(
        s.models, s.parametrisation, s.batch_size, s.seeds, schedules
    ):
        # muP is every preset's own: a muP trajectory's overrides (and ids) do not name it
        settings["model_overrides"] = (
            overrides if parametrisation == "mup" else {**overrides, "use_mup": False}
        )
        yield TrainConfig(
            model=model, schedule=schedule, batch_size=batch_size, tokens=longest, seed=seed, **settings
        )


def schedule_settings(spec: SweepSpec) -> dict:
    """The schedule's fixed settings (name, warmup, decay); its searched values (lr; power a, b, lr_max)
    vary."""
    return settings_for(spec.train, ScheduleConfig)


def grid_schedules(spec: SweepSpec) -> list[ScheduleConfig]:
    """A schedule per searched value of the grid: each lr, or each combination of power a, b and lr_max."""
    s, common = spec.search, schedule_settings(spec)
    if spec.train.schedule != "power":
        return [ScheduleConfig(lr=lr, **common) for lr in s.lr]
    return [
        ScheduleConfig(power_a=a, power_b=b, lr_max=m, **common)
        for a, b, m in itertools.product(s.power_a, s.power_b, s.lr_max)
    ]
