"""One lineage trains every token budget of a run: a trunk with a decay branch forked per smaller budget.

With WSD or Power (same warmup, seed and data order) a run of budget T follows the longest run's lr
exactly until its decay starts, so its result can come from a branch forked off one shared trunk: save the
state, run the branch's decay, evaluate, restore, continue. Tokens trained fall from sum(T_i) to
(1 - f) * T_max + f * sum(T_i). The fork step is found by comparing the two lr sequences themselves, so a
schedule that depends on T everywhere (cosine) forks at step 0: every budget is then a solo run.
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

from proxy_models.data import TokenCorpus
from proxy_models.trainer import RunResult, TrainConfig, Trainer


@dataclass(frozen=True)
class Branch:
    """One budget of a lineage: where it leaves the trunk and where it ends, in steps."""

    tokens: float  # the budget as requested
    fork_step: int  # steps shared with the trunk
    steps: int  # steps of the full run of this budget


@dataclass
class Attempt:
    """What one process did for a lineage, never restored by checkpoints: shows whether a retried lineage
    continued from its checkpoint, and where a trial's time went."""

    pid: int = field(default_factory=os.getpid)
    start_step: int = 0  # trunk step restored from the checkpoint (0: trained from scratch)
    steps_trained: int = 0  # optimizer steps this process ran, trunk and branches
    train_s: float = 0.0  # seconds in those steps
    eval_s: float = 0.0  # seconds evaluating on the held-out set

    def add(self, before: tuple[int, float, float], trainer: Trainer) -> None:
        """Count what `trainer` did since `before` (its `_work` then)."""
        now = _work(trainer)
        self.steps_trained += now[0] - before[0]
        self.train_s += now[1] - before[1]
        self.eval_s += now[2] - before[2]


def _work(trainer: Trainer) -> tuple[int, float, float]:
    return trainer.steps_trained, trainer.seconds_trained, trainer.eval_seconds


def plan_branches(config: TrainConfig, budgets: Sequence[float]) -> list[Branch]:
    """Branches in ascending budget order. The largest budget is a branch too: the trunk stops at its decay
    start, so a trunk checkpoint never holds a decayed state and a longer budget can still fork from it."""
    branches = []
    for tokens in sorted(set(budgets)):
        solo = replace(config, tokens=tokens)
        branches.append(Branch(tokens=tokens, fork_step=_fork_step(solo), steps=solo.steps))
    return branches


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


def train_lineage(
    config: TrainConfig,
    budgets: Sequence[float],
    *,
    corpus: TokenCorpus | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every_steps: int = 0,
    log: Callable | None = None,
    on_result: Callable[[RunResult], None] | None = None,
    attempt: Attempt | None = None,
) -> list[RunResult]:
    """Result rows of every budget (ascending), each equal to a solo run of that budget.

    With `checkpoint_dir` the trunk is saved at every fork point (and every `checkpoint_every_steps` steps)
    and finished results are kept, so a lineage killed at any moment resumes without redoing finished
    branches and without changing any result; each process's `Attempt` is kept there too (attempts.json).
    `on_result` sees each budget's row as soon as it is final (e.g. to store it), and again on every resume,
    as the process may have died before on_result finished; `attempt`, if given, is filled in as it trains.
    """
    branches = plan_branches(config, budgets)
    trunk_total = branches[-1].steps * config.tokens_per_step
    trainer = Trainer(replace(config, tokens=branches[-1].tokens), corpus=corpus, log=log)
    done = _Progress(checkpoint_dir, trainer, attempt or Attempt())
    for branch in branches:
        if branch.tokens in done.results:  # finished before a kill; it may have died before on_result
            if on_result is not None:
                on_result(done.results[branch.tokens])
            continue
        if trainer.step > branch.fork_step:  # the checkpointed trunk is past this fork: start it again
            trainer = done.trainer = Trainer(replace(config, tokens=branches[-1].tokens), corpus=corpus, log=log)
        before = _work(trainer)
        trainer.train_to(branch.fork_step, total_tokens=trunk_total, checkpoint_path=done.trunk_path,
                         checkpoint_every_steps=checkpoint_every_steps)
        result = _run_branch(trainer, branch)
        done.attempt.add(before, trainer)
        done.record(branch, result)
        if on_result is not None:
            on_result(done.results[branch.tokens])
    return [done.results[b.tokens] for b in branches]


def _run_branch(trainer: Trainer, branch: Branch) -> RunResult:
    """Train the branch's decay from the trunk's state, evaluate, and put the trunk back."""
    if trainer.diverged:  # the trunk diverged before this fork: the budget inherits it
        return trainer.result(tokens=branch.tokens)
    trunk_state = copy.deepcopy(trainer.state_dict())
    total = branch.steps * trainer.cfg.tokens_per_step
    trainer.train_to(branch.steps, total_tokens=total)
    result = trainer.result(tokens=branch.tokens)
    if branch.fork_step < branch.steps:
        trainer.load_state_dict(trunk_state)
    return result


class _Progress:
    """Finished results and the trunk checkpoint of a lineage, on disk when a directory is given."""

    def __init__(self, directory: str | None, trainer: Trainer, attempt: Attempt):
        self.directory, self.trainer, self.results, self.attempt = directory, trainer, {}, attempt
        self.earlier_attempts: list[dict] = []
        if directory is None:
            return
        os.makedirs(directory, exist_ok=True)
        self.results = {row["tokens"]: RunResult(**row) for row in self._load("results.json")}
        self.earlier_attempts = self._load("attempts.json")
        if os.path.exists(self.trunk_path):
            trainer.load_checkpoint(self.trunk_path)
        attempt.start_step = trainer.step
        self._save_attempts()

    def _load(self, name: str) -> list[dict]:
        if not os.path.exists(self._path(name)):
            return []
        with open(self._path(name)) as f:
            return json.load(f)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    @property
    def trunk_path(self) -> str | None:
        return None if self.directory is None else self._path("trunk.pt")

    def record(self, branch: Branch, result: RunResult) -> None:
        self.results[branch.tokens] = result
        if self.directory is None:
            return
        self._dump("results.json", [r.to_row() for r in self.results.values()])
        self._save_attempts()

    def _save_attempts(self) -> None:
        self._dump("attempts.json", [*self.earlier_attempts, asdict(self.attempt)])

    def _dump(self, name: str, rows: list[dict]) -> None:
        """Write atomically: a kill leaves the old file or the new one, never part of one."""
        tmp = self._path(f"{name}.tmp-{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(rows, f, allow_nan=True)
        os.replace(tmp, self._path(name))


def load_attempts(checkpoint_dir: str) -> list[Attempt]:
    """Every process's `Attempt` at a lineage, oldest first, as last saved (at start and after each budget)."""
    path = os.path.join(checkpoint_dir, "attempts.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Attempt(**row) for row in json.load(f)]


def independent_tokens(config: TrainConfig, budgets: Sequence[float]) -> int:
    """Tokens that separate runs of every budget would train."""
    return sum(replace(config, tokens=t).steps for t in set(budgets)) * config.tokens_per_step


def token_ratio(config: TrainConfig, budgets: Sequence[float]) -> float:
    """Tokens a lineage trains over the tokens of independent runs of every budget."""
    independent = independent_tokens(config, budgets)
    return planned_tokens(config, budgets) / independent if independent else math.nan
