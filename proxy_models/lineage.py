"""One lineage trains every token budget of a run: a trunk with a decay branch forked per smaller budget.

With WSD or Power (same warmup, seed and data order) a run of budget T follows the longest run's lr
exactly until its decay starts, so its result can come from a branch forked off one shared trunk: save the
state, run the branch's decay, evaluate, restore, continue. Tokens trained fall from sum(T_i) to
(1 - f) * T_max + f * sum(T_i). The fork step is found by comparing the two lr sequences themselves, so a
schedule that depends on T everywhere (cosine) forks at step 0: every budget is then a solo run.

At each fork the trunk itself is evaluated too (a row with phase 'trunk': stable-phase loss, not a budget's
result). `train_packed_lineage` runs the same driver over a PackedTrainer: K variants (schedules, seeds) in
lockstep.
"""

from __future__ import annotations

import copy
import json
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field, replace

from powersweep.proxy_models import checkpoint, files
from powersweep.proxy_models.budgets import Branch, plan_branches, trunk_steps
from powersweep.proxy_models.curve_recorder import DEFAULT_GRID, CurveGrid
from powersweep.proxy_models.data import TokenCorpus, load_corpus
from powersweep.proxy_models.packed import PackedTrainer
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer
from powersweep.rows import RunResult


@dataclass
class Attempt:
    """What one process did for a lineage, never restored by checkpoints: shows whether a retried lineage
    continued from its checkpoint, and where a trial's time went."""

    pid: int = field(default_factory=os.getpid)
    start_step: int = 0  # trunk step restored from the checkpoint (0: trained from scratch)
    steps_trained: int = 0  # optimizer steps this process ran, trunk and branches
    train_s: float = 0.0  # seconds in those steps
    eval_s: float = 0.0  # seconds evaluating on the held-out set
    checkpoint_s: float = 0.0  # seconds training waited for trunk checkpoints (copies and earlier writes)
    record_s: float = 0.0  # seconds recording rows: on_result and on_curve (a sweep's store) and results.json
    first_step_s: float = 0.0  # of train_s, each trainer's first step (compiling, when compiled)
    # the first trainer's setup ({'device', 'corpus', 'model'} seconds) and its first step's start and end
    # (wall clock): the start-up breakdown of a sweep (sweeps/progress.py)
    setup: dict = field(default_factory=dict)
    first_step_at: tuple[float, float] | None = None

    def add(self, before: tuple[int, float, float, float, float], trainer) -> None:
        """Count what `trainer` did since `before` (its `_work` then)."""
        if self.first_step_at is None and trainer.first_step_at is not None:
            self.setup, self.first_step_at = dict(trainer.setup_seconds), trainer.first_step_at
        now = _work(trainer)
        self.steps_trained += now[0] - before[0]
        self.train_s += now[1] - before[1]
        self.eval_s += now[2] - before[2]
        self.checkpoint_s += now[3] - before[3]
        self.first_step_s += now[4] - before[4]


def _work(trainer) -> tuple[int, float, float, float, float]:
    """Steps, training seconds, eval seconds, checkpoint seconds and first-step seconds a Trainer or
    PackedTrainer has spent so far."""
    return (
        trainer.steps_trained,
        trainer.seconds_trained,
        trainer.eval_seconds,
        trainer.checkpoint_seconds,
        trainer.first_step_seconds,
    )


def train_lineage(
    config: TrainConfig,
    budgets: Sequence[float],
    *,
    trunk_at: Sequence[int] | None = None,
    corpus: TokenCorpus | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every_steps: int = 0,
    on_result: Callable[[RunResult], None] | None = None,
    attempt: Attempt | None = None,
    redo: Collection[tuple[str, float]] = (),
    on_curve: Callable[[list[dict]], None] | None = None,
    curve_grid: CurveGrid | None = DEFAULT_GRID,
) -> list[RunResult]:
    """Result rows of every budget (ascending), each equal to a solo run of that budget.

    The trunk is also evaluated at the tokens `trunk_at` (default `trunk_tokens(config, budgets)`) that it
    reaches, as rows with phase 'trunk'; evaluating changes no budget's result. With `checkpoint_dir` the
    trunk is saved at every fork point (and every `checkpoint_every_steps` steps) and finished rows are kept,
    so a lineage killed at any moment resumes without redoing finished branches and without changing any
    result; each process's `Attempt` is kept there too (attempts.json, see `load_attempts`). `on_result` sees
    each row, trunk rows included, as soon as it is final (e.g. to store it), before the row is recorded as
    finished: a lineage killed inside `on_result` hands that row on again when it resumes. `attempt`, if
    given, is filled in as it trains. `redo` names rows, as (phase, tokens), that the checkpoint directory
    recorded but the caller lost (e.g. a results store that no longer holds them): they are trained and handed
    on again.

    `on_curve` sees, at each evaluation and before its rows, the curve points (proxy_models.curve_recorder) of
    the trunk so far and of the branch just finished, as dicts; a point may be handed on more than once (after
    a resume), always with the same key (segment, budget, kind, step). `curve_grid` None keeps no points."""
    trunk = replace(config, tokens=max(budgets))
    rows = _drive(
        _with_grid(lambda: Trainer(trunk, corpus=corpus), curve_grid),
        plan_branches(config, budgets),
        _at_steps(config, budgets, trunk_at),
        _Progress(checkpoint_dir, attempt or Attempt(), redo),
        on_result=on_result and (lambda _, row: on_result(row)),
        every=checkpoint_every_steps,
        on_curve=on_curve and (lambda _, points: on_curve(points)),
    )
    return rows[0]


def train_packed_lineage(
    config: TrainConfig,
    schedules: Sequence[ScheduleConfig],
    budgets: Sequence[float],
    *,
    seeds: Sequence[int] | None = None,
    trunk_at: Sequence[int] | None = None,
    corpus: TokenCorpus | None = None,
    checkpoint_dir: str | None = None,
    checkpoint_every_steps: int = 0,
    on_result: Callable[[int, RunResult], None] | None = None,
    attempt: Attempt | None = None,
    redo: Collection[tuple[str, float]] = (),
    on_curve: Callable[[int, list[dict]], None] | None = None,
    curve_grid: CurveGrid | None = DEFAULT_GRID,
) -> list[list[RunResult]]:
    """`train_lineage` for K variants of `config` that differ only in their schedule and seed (`seeds`,
    default config.seed for all), trained in lockstep (PackedTrainer): the budget rows of each variant, in
    `schedules` order. `on_result(i, row)` sees the rows of variant i. The fork points depend only on budgets,
    decay_fraction and step size, so all variants fork together; a variant diverged in the trunk gets diverged
    rows for every later budget and trunk point. `redo` applies to every variant; `on_curve(i, points)` sees
    variant i's curve points."""
    config = replace(config, schedule=schedules[0], tokens=max(budgets))
    corpus = corpus if corpus is not None else load_corpus(config.data)  # once, not per trunk restart
    return _drive(
        _with_grid(lambda: PackedTrainer(config, schedules, seeds=seeds, corpus=corpus), curve_grid),
        plan_branches(config, budgets),
        _at_steps(config, budgets, trunk_at),
        _Progress(checkpoint_dir, attempt or Attempt(), redo),
        k=len(schedules),
        on_result=on_result,
        every=checkpoint_every_steps,
        on_curve=on_curve,
    )


def _with_grid(new_trainer: Callable, grid: CurveGrid | None) -> Callable:
    """`new_trainer` whose trainers keep curve points on `grid` (None: none)."""
    if grid == DEFAULT_GRID:
        return new_trainer

    def new():
        trainer = new_trainer()
        trainer.curve.set_grid(grid)
        return trainer

    return new


def _at_steps(config: TrainConfig, budgets: Sequence[float], trunk_at: Sequence[int] | None) -> list[int]:
    if trunk_at is None:
        return trunk_steps(config, budgets)
    return [int(tokens // config.tokens_per_step) for tokens in trunk_at]


@dataclass(frozen=True)
class _Event:
    """One evaluation of a lineage: the trunk at a step, or a budget's branch forked at a step."""

    step: int  # trunk step where it happens
    phase: str  # 'trunk' | 'final'
    tokens: float  # the rows' tokens: tokens seen (trunk) or the budget (final)
    branch: Branch | None = None


def _events(branches: list[Branch], at_steps: Sequence[int], tokens_per_step: int) -> list[_Event]:
    """Trunk points and branches in trunk order;
    a trunk point comes before a branch forked at the same step."""
    trunk = [_Event(step, "trunk", step * tokens_per_step) for step in at_steps]
    finals = [_Event(b.fork_step, "final", b.tokens, b) for b in branches]
    return sorted(trunk + finals, key=lambda e: (e.step, e.phase == "final"))


def _drive(
    new_trainer: Callable,
    branches: list[Branch],
    at_steps: Sequence[int],
    done: _Progress,
    *,
    k: int = 1,
    on_result: Callable | None,
    every: int,
    on_curve: Callable | None = None,
) -> list[list[RunResult]]:
    """Walk the trunk through every event not yet recorded; returns each variant's budget rows (ascending).

    `new_trainer()` gives a Trainer or a PackedTrainer: both offer train_to, state_dict / load_state_dict,
    save / load_checkpoint, results (one row per variant) and diverged (every variant)."""
    trainer = done.resume(new_trainer())
    trunk_total = branches[-1].steps * trainer.cfg.tokens_per_step
    for event in _events(branches, at_steps, trainer.cfg.tokens_per_step):
        if done.has(event, k):
            continue
        if trainer.step > event.step:
            # no state left to evaluate: the trunk is past it
            if event.branch is None and not done.lost(event):
                continue
            # the checkpointed trunk is past this fork (or lost trunk row): start again
            trainer = new_trainer()
        before = _work(trainer)
        trainer.train_to(
            event.step,
            total_tokens=trunk_total,
            checkpoint_path=done.trunk_path,
            checkpoint_every_steps=every,
        )
        rows, curves = (
            _run_branch(trainer, event.branch) if event.branch else _trunk_rows(trainer, event.tokens)
        )
        done.attempt.add(before, trainer)
        start = time.perf_counter()
        for i, points in enumerate(curves if on_curve is not None else ()):
            on_curve(i, points)  # before the rows are recorded: a kill in between hands the points on again
        done.record(event, rows, on_result)
        done.attempt.record_s += time.perf_counter() - start
    if done.trunk_path:
        checkpoint.wait(done.trunk_path)  # the lineage ends with its last trunk checkpoint on disk
    return [[done.results[(i, "final", b.tokens)] for b in branches] for i in range(k)]


def _trunk_rows(trainer, tokens: float) -> tuple[list[RunResult], list[list[dict]]]:
    """The trunk evaluated as it is: stable phase, before any decay; and each variant's trunk curve so far."""
    rows = [replace(row, phase="trunk") for row in trainer.results(tokens=tokens)]
    return rows, _segment_points(trainer, rows)


def _segment_points(trainer, rows: list[RunResult]) -> list[list[dict]]:
    """Close the trainer's current curve segment here, with the rows' held-out losses:
    each variant's points."""
    trainer.curve.close()
    trainer.curve.add_eval(trainer.step, [row.loss_eval for row in rows])
    return [trainer.curve.points(i) for i in range(len(rows))]


def _run_branch(trainer, branch: Branch) -> tuple[list[RunResult], list[list[dict]]]:
    """Train the branch's decay from the trunk's state, evaluate, and put the trunk back; with each variant's
    curve: the trunk's points so far, then the branch's."""
    trainer.curve.close()
    trunk = [trainer.curve.points(i) for i in range(trainer.curve.variants)]
    if trainer.diverged:  # the trunk diverged before this fork: the budget inherits it
        return trainer.results(tokens=branch.tokens), trunk
    trunk_state = copy.deepcopy(trainer.state_dict())
    total = branch.steps * trainer.cfg.tokens_per_step
    trainer.curve.begin(branch.tokens, fork_step=branch.fork_step, total_tokens=total)
    trainer.train_to(branch.steps, total_tokens=total)
    rows = trainer.results(tokens=branch.tokens)
    curves = [t + b for t, b in zip(trunk, _segment_points(trainer, rows))]
    if branch.fork_step < branch.steps:
        trainer.load_state_dict(trunk_state)
    else:
        trainer.curve.load_state_dict(trunk_state["curve"])  # no step trained: only the curve left the trunk
    return rows, curves


class _Progress:
    """Finished rows, keyed (variant, phase, tokens), and the trunk checkpoint of a lineage, on disk when a
    directory is given."""

    def __init__(self, directory: str | None, attempt: Attempt, redo: Collection[tuple[str, float]] = ()):
        self.directory, self.results, self.attempt = directory, {}, attempt
        self.redo = {(phase, float(tokens)) for phase, tokens in redo}
        self.earlier_attempts: list[dict] = []
        if directory is None:
            return
        os.makedirs(directory, exist_ok=True)
        files.remove_stale_temps(directory)  # what a killed attempt was writing
        saved = dict(_saved(row) for row in self._load("results.json"))
        self.results = {key: row for key, row in saved.items() if (key[1], float(key[2])) not in self.redo}
        self.earlier_attempts = self._load("attempts.json")

    def lost(self, event: _Event) -> bool:
        """Whether the caller asked for this row again though it was recorded."""
        return (event.phase, float(event.tokens)) in self.redo

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

    def resume(self, trainer):
        """`trainer`, with the saved trunk loaded if there is one."""
        if self.trunk_path and checkpoint.exists(self.trunk_path):
            trainer.load_checkpoint(self.trunk_path)
        self.attempt.start_step = trainer.step
        self._save_attempts()
        return trainer

    def has(self, event: _Event, k: int) -> bool:
        return all((i, event.phase, event.tokens) in self.results for i in range(k))

    def record(self, event: _Event, rows: list[RunResult], on_result: Callable | None) -> None:
        """Hand the rows on, then keep them: a kill in between repeats the rows, never loses them."""
        for i, row in enumerate(rows):
            if on_result is not None:
                on_result(i, row)
            self.results[(i, event.phase, event.tokens)] = row
        self._dump("results.json", [{**row.to_row(), "variant": key[0]} for key, row in self.results.items()])
        self._save_attempts()

    def _save_attempts(self) -> None:
        self._dump("attempts.json", [*self.earlier_attempts, asdict(self.attempt)])

    def _dump(self, name: str, rows: list[dict]) -> None:
        """Write atomically: a kill leaves the old file or the new one, never part of one."""
        if self.directory is None:
            return
        files.write_atomically(self._path(name), lambda stream: stream.write(json.dumps(rows).encode()))


def load_attempts(checkpoint_dir: str) -> list[Attempt]:
    """Every process's `Attempt` at a lineage, oldest first, as last saved (at start and after each row)."""
    path = os.path.join(checkpoint_dir, "attempts.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [Attempt(**row) for row in json.load(f)]


def _saved(row: dict) -> tuple[tuple[int, str, float], RunResult]:
    """((variant, phase, tokens), row) of a saved row."""
    result = RunResult(**{k: v for k, v in row.items() if k != "variant"})
    return (row["variant"], result.phase, result.tokens), result
