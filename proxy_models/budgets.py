"""Token arithmetic of a lineage: where each budget forks from the trunk, the tokens the lineage trains and
those independent runs would train. Pure functions of a TrainConfig (no torch), so a sweep is planned without
it.

>>> planned_tokens(config, [1e6, 2e6, 4e6]) / independent_tokens(config, [1e6, 2e6, 4e6])   # token_ratio
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from powersweep.proxy_models.train_config import TrainConfig


@dataclass(frozen=True)
class Branch:
    """One budget of a lineage: where it leaves the trunk and where it ends, in steps."""

    tokens: float  # the budget as requested
    fork_step: int  # steps shared with the trunk
    steps: int  # steps of the full run of this budget


def plan_branches(config: TrainConfig, budgets: Sequence[float]) -> list[Branch]:
    """Branches in ascending budget order. The largest budget is a branch too: the trunk stops at its decay
    start, so a trunk checkpoint never holds a decayed state and a longer budget can still fork from it."""
    key = (config.schedule, config.tokens_per_step, tuple(sorted(set(budgets))))
    if key not in _BRANCHES:
        if len(_BRANCHES) >= 100_000:
            _BRANCHES.clear()
        _BRANCHES[key] = tuple(_branch(config, tokens) for tokens in key[2])
    return list(_BRANCHES[key])


# (schedule, tokens per step, budgets) -> their branches: they depend on the config through these only, so a
# plan of many lineages (seeds, models of one width) makes and checks each solo config once per lr
_BRANCHES: dict[tuple, tuple[Branch, ...]] = {}


def _branch(config: TrainConfig, tokens: float) -> Branch:
    solo = replace(config, tokens=tokens)  # checks the budget: at least one step, room for the warmup
    return Branch(tokens=tokens, fork_step=_fork_step(solo), steps=solo.steps)


def _fork_step(solo: TrainConfig) -> int:
    """Steps the solo run shares with the trunk: those whose lr is taken before the solo decay starts.

    Step k takes its lr at (k + 1) * tokens_per_step tokens (see Trainer.lr_at_step).
    """
    tps = solo.tokens_per_step
    fork_tokens = solo.schedule.fork_point(solo.steps * tps)
    return min(int(fork_tokens // tps), solo.steps)


def planned_tokens(config: TrainConfig, budgets: Sequence[float]) -> int:
    """Tokens a lineage trains: the trunk once, plus each branch past its fork."""
    branches = plan_branches(config, budgets)
    tps = config.tokens_per_step
    return tps * (branches[-1].fork_step + sum(b.steps - b.fork_step for b in branches))


def trunk_steps(config: TrainConfig, budgets: Sequence[float]) -> list[int]:
    """Steps where the lineage evaluates its trunk: every branch's fork (the largest budget's too), ascending.
    A fork at step 0 (cosine) has no trunk to evaluate."""
    return sorted({b.fork_step for b in plan_branches(config, budgets) if b.fork_step > 0})


def trunk_tokens(config: TrainConfig, budgets: Sequence[float]) -> list[int]:
    """Tokens seen at each trunk evaluation: the `tokens` of the lineage's trunk rows."""
    return [step * config.tokens_per_step for step in trunk_steps(config, budgets)]


def independent_tokens(config: TrainConfig, budgets: Sequence[float]) -> int:
    """Tokens that separate runs of every budget would train."""
    return sum(replace(config, tokens=t).steps for t in set(budgets)) * config.tokens_per_step


def token_ratio(config: TrainConfig, budgets: Sequence[float]) -> float:
    """Tokens a lineage trains over the tokens of independent runs of every budget."""
    independent = independent_tokens(config, budgets)
    return planned_tokens(config, budgets) / independent if independent else math.nan
