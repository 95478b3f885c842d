"""Progress of a running sweep (rows stored, lineages done, elapsed, ETA) and where its wall time went.

Trials report once per stored budget (see `execute._trial`); `Tracker` turns those reports into a status
line and, at the end, an `ExecutionReport`. It knows nothing of Ray: `tune_callback` adapts it.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

from powersweep.proxy_models.budgets import plan_branches
from powersweep.sweeps.lineages import LineageJob

# Seconds a trial reports, each the sum over its jobs' `Attempt`s (proxy_models/lineage.py) of the same field.
TIMED = ("train_s", "eval_s", "checkpoint_s", "record_s", "first_step_s")


@dataclass(frozen=True)
class ExecutionReport:
    """Where the wall time of one `execute` call went, in seconds summed over trials.

    `slots` is how many trials could run at once; wall_s * slots is the trial time on offer. Training is the
    optimizer steps (of them, first steps: each trainer's first, which compiles when compiled), eval the
    held-out evaluations, checkpoints the time training waited for trunk checkpoints (their copies to host
    memory; the writes run in the background), store writes the rows and curve points written to the store;
    the rest of each trial's time is its setup (model, corpus, the lineage's state). Start-up is the wall time
    before the first trial began (Ray's start, the trial's process and imports), when every slot is idle;
    whatever else of wall_s * slots the trials did not use is Ray and driver overhead
    (scheduling, later trials' processes, idle slots while the last trials finish, and the trials' reports to
    Ray, which a trial takes out of its own time).
    """

    failed_trials: int
    rows_stored: int
    wall_s: float  # execute() from start to end, Ray start-up included
    slots: int  # concurrent trial slots
    train_s: float  # optimizer steps
    eval_s: float  # held-out evaluations
    trial_s: float  # trial bodies, from start to their last report
    checkpoint_s: float = 0.0  # trunk checkpoints (copies to host memory; waits for an earlier write)
    record_s: float = 0.0  # rows and curve points written to the store (and the lineage's results file)
    startup_s: float = 0.0  # wall seconds before the first trial body began
    first_step_s: float = 0.0  # of train_s, each trainer's first step (compiling, when compiled)
    # the sweep's fixed cost up to the first trial's first step, part by part in order (name, seconds): they
    # add up to the seconds from the driver's start to the end of that step (`STARTUP_PARTS`); () when the
    # driver's marks or the trial's report of its first step are missing
    startup_parts: tuple[tuple[str, float], ...] = ()

    @property
    def offered_s(self) -> float:
        return self.wall_s * self.slots

    def share(self, seconds: float) -> float:
        """`seconds` as a share of the trial time on offer."""
        return seconds / self.offered_s if self.offered_s > 0 else float("nan")

    def summary(self) -> dict:
        """Shares of wall_s * slots: training, eval, checkpoints, store writes, trial setup, start-up, and
        Ray and driver; they add up to 1."""
        startup = self.share(self.startup_s * self.slots)
        return {
            "wall_s": self.wall_s,
            "slots": self.slots,
            "rows_stored": self.rows_stored,
            "failed_trials": self.failed_trials,
            "training": self.share(self.train_s),
            "first_steps": self.share(self.first_step_s),
            "outside_training": 1 - self.share(self.train_s),
            "eval": self.share(self.eval_s),
            "checkpoints": self.share(self.checkpoint_s),
            "store_writes": self.share(self.record_s),
            "trial_setup": self.share(
                self.trial_s - self.train_s - self.eval_s - self.checkpoint_s - self.record_s
            ),
            "startup": startup,
            "ray_and_driver": 1 - self.share(self.trial_s) - startup,
            "startup_parts_s": dict(self.startup_parts),
        }

    def format(self) -> str:
        """The shares of the wall; then, where known, the start-up to the first step part by part."""
        s = self.summary()
        line = (
            f"wall {_duration(self.wall_s)} x {self.slots} slots: training {s['training']:.1%} "
            f"(first steps {s['first_steps']:.1%}), outside training {s['outside_training']:.1%} "
            f"(eval {s['eval']:.1%}, checkpoints {s['checkpoints']:.1%}, store writes "
            f"{s['store_writes']:.1%}, trial setup {s['trial_setup']:.1%}, start-up {s['startup']:.1%}, "
            f"Ray and driver {s['ray_and_driver']:.1%})"
        )
        if not self.startup_parts:
            return line
        parts = ", ".join(f"{STARTUP_PARTS[name]} {_seconds(s)}" for name, s in self.startup_parts)
        total = sum(seconds for _, seconds in self.startup_parts)
        return f"{line}\nto the first training step {_seconds(total)}: {parts}"


# The parts of the start-up, in order, as the breakdown names them: the driver's checks (data, plan, store,
# memory), Ray's start, then until the first trial's body ran (the driver's set-up, Tune's, the trial's
# process and imports), the trial's set-up before its first trainer (its store, checkpoints, trackers), that
# trainer's device (the CUDA context), corpus and model (built, compiled where it is), and its first step.
STARTUP_PARTS = {
    "checks": "checks",
    "ray": "Ray's start",
    "trial_process": "to the trial's process",
    "trial_setup": "trial setup",
    "device": "device",
    "corpus": "corpus",
    "model": "model",
    "first_step": "first step",
}


class Tracker:
    """Rows stored and tokens done of a running sweep, from the trials' per-budget reports."""

    def __init__(
        self,
        jobs: Sequence[LineageJob],
        *,
        clock=time.perf_counter,
        wall_clock=time.time,
        marks: tuple[float, float, float] | None = None,
        rounds: bool = False,
    ):
        self.clock, self.start = clock, clock()
        # in a sweep of rounds (adaptive) the round in progress: its line counts the rows asked for so far
        self.round = 0 if rounds else None
        # trials report their start on this clock (time.time, across processes)
        self.wall_start = wall_clock()
        self.marks = marks  # the driver's start, Ray's start and Ray ready (ExecutionSettings.startup_marks)
        self.first_trial_at = math.inf  # the earliest start a trial reported
        self.first_step: dict | None = None  # the report of the trial whose first step ended first
        # each job is a lineage run: the jobs of later rounds (`add`) may train more budgets of a lineage
        self.job_of: dict[str, int] = {}  # run_id -> the job that trains it
        self.tokens_at: dict[str, int] = {}  # run_id -> tokens its job has trained once it is stored
        self.remaining: list[int] = []  # per job: budgets not stored yet
        self.tokens_planned = 0
        self.stored: set[str] = set()
        self.job_tokens: dict[int, int] = {}  # per job: tokens trained up to its last stored row
        self.work: dict[tuple[str, int], dict] = {}  # (trial_id, pid) -> its latest cumulative timings
        # (clock, fraction_done) once the first row is stored
        self.first_row: tuple[float, float] | None = None
        self.add(jobs)

    def add(self, jobs: Sequence[LineageJob]) -> None:
        """Count `jobs` as planned too: the first jobs, then each later round's."""
        if self.round is not None:
            self.round += 1
        for job in jobs:
            tokens = _tokens_at_each_budget(job)
            for run_id, at in zip(job.run_ids, tokens):
                self.job_of[run_id], self.tokens_at[run_id] = len(self.remaining), at
            self.remaining.append(len(job.run_ids))
            self.tokens_planned += tokens[-1]

    def on_report(self, trial_id: str, report: dict) -> bool:
        """Take one trial report; True if it stored a row not seen before (a trial's report of a deterministic
        error, `sweeps.failures`, stores none)."""
        if "run_id" not in report:
            return False
        self.work[(trial_id, report["worker_pid"])] = report
        self.first_trial_at = min(self.first_trial_at, report.get("started_at", math.inf))
        if "first_step_end_at" in report and (
            self.first_step is None or report["first_step_end_at"] < self.first_step["first_step_end_at"]
        ):
            self.first_step = report
        run_id = report["run_id"]
        if run_id in self.stored or run_id not in self.job_of:
            return False
        self.stored.add(run_id)
        job = self.job_of[run_id]
        self.remaining[job] -= 1
        self.job_tokens[job] = max(self.job_tokens.get(job, 0), self.tokens_at[run_id])
        if self.first_row is None:
            self.first_row = (self.clock(), self.fraction_done)
        return True

    @property
    def fraction_done(self) -> float:
        """Share of the planned tokens whose results are stored (the rows of small budgets come early)."""
        return sum(self.job_tokens.values()) / self.tokens_planned if self.tokens_planned else 1.0

    def eta_s(self) -> float | None:
        """Seconds left at the rate since the first stored row (start-up is not part of the rate); None until
        a second row shows the rate."""
        if self.first_row is None:
            return None
        (since, done_then), done = self.first_row, self.fraction_done
        if done <= done_then:
            return None
        return (self.clock() - since) * (1 - done) / (done - done_then)

    def line(self) -> str:
        """rows stored / planned with a bar, lineages done, elapsed and ETA; in a sweep of rounds, after the
        round in progress, of the rows asked for so far."""
        elapsed, done, eta_s = self.clock() - self.start, self.fraction_done, self.eta_s()
        eta = "?" if eta_s is None else _duration(eta_s)
        lineages_done = sum(1 for n in self.remaining if n == 0)
        return (
            ("" if self.round is None else f"round {self.round}: ")
            + f"rows {len(self.stored)}/{len(self.job_of)} {bar(done)} {done:.0%}  lineages "
            f"{lineages_done}/{len(self.remaining)}  elapsed {_duration(elapsed)}  eta {eta}"
        )

    def report(self, *, failed_trials: int, slots: int) -> ExecutionReport:
        total = {k: sum(w.get(k, 0.0) for w in self.work.values()) for k in ("trial_s", *TIMED)}
        wall_s = self.clock() - self.start
        started = self.first_trial_at < math.inf  # a trial reported its start: the wall before it is start-up
        startup_s = min(max(self.first_trial_at - self.wall_start, 0.0), wall_s) if started else 0.0
        return ExecutionReport(
            failed_trials=failed_trials,
            rows_stored=len(self.stored),
            wall_s=wall_s,
            slots=slots,
            startup_s=startup_s,
            startup_parts=self.startup_parts(),
            **total,
        )

    def startup_parts(self) -> tuple[tuple[str, float], ...]:
        """The start-up to the first trial's first step, part by part (STARTUP_PARTS), each the span between
        two wall-clock marks: they add up to the seconds from the driver's start to that step's end."""
        first = self.first_step
        if self.marks is None or first is None:
            return ()
        submitted, ray_start, ray_ready = self.marks
        trainer = [first.get(f"setup_{part}_s", 0.0) for part in ("device", "corpus", "model")]
        begun = first["first_step_start_at"]
        seconds = [
            ray_start - submitted,
            ray_ready - ray_start,
            first["started_at"] - ray_ready,
            begun - first["started_at"] - sum(trainer),
            *trainer,
            first["first_step_end_at"] - begun,
        ]
        return tuple(zip(STARTUP_PARTS, seconds))


def _tokens_at_each_budget(job: LineageJob) -> list[int]:
    """Tokens the lineage has trained when each budget's row is stored (budgets ascending)."""
    tokens_per_step, trained, out = job.config.tokens_per_step, 0, []
    branches = plan_branches(job.config, job.budgets)
    trunk = 0
    for branch in branches:
        trained += (branch.fork_step - trunk) + (branch.steps - branch.fork_step)
        trunk = branch.fork_step
        out.append(trained * tokens_per_step)
    return out


def _seconds(seconds: float) -> str:
    """A part of the start-up: to 0.1 s, or to the millisecond below 1 s (a CPU's parts take milliseconds)."""
    return f"{seconds:.1f} s" if abs(seconds) >= 1 else f"{seconds * 1000:.0f} ms"


def bar(fraction: float, width: int = 24) -> str:
    """A text progress bar: [#########---------------]."""
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes}m{seconds:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


class StatusPrinter:
    """Writes the tracker's line to a stream: rewritten in place on a terminal, else every `interval_s`."""

    def __init__(self, tracker: Tracker, *, stream: TextIO | None = None, interval_s: float = 10.0):
        self.tracker, self._stream, self.interval_s = tracker, stream, interval_s
        self.tty = self.stream.isatty()
        self.last = -float("inf")

    @property
    def stream(self) -> TextIO:
        # looked up late: Tune pickles its callbacks, stderr does not pickle
        return self._stream or sys.stderr

    def update(self, *, final: bool = False) -> None:
        now = self.tracker.clock()
        if not (final or self.tty or now - self.last >= self.interval_s):
            return
        self.last = now
        end = "\n" if final or not self.tty else ""
        print(("\r" if self.tty else "") + self.tracker.line(), end=end, file=self.stream, flush=True)


def tune_callback(printer: StatusPrinter):
    """A Ray Tune callback feeding the trials' reports to `printer`'s tracker."""
    from ray import tune

    class Progress(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            if printer.tracker.on_report(trial.trial_id, result):
                printer.update()

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"\ntrial {trial.trial_id} failed: {trial.error_file}", file=printer.stream, flush=True)

    return Progress()


def trials_done_callback(total: int):
    """A Ray Tune callback printing one line per finished trial (trials that report only at their end)."""
    from ray import tune

    class TrialsDone(tune.Callback):
        def __init__(self):
            self.done, self.start = 0, time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            elapsed = _duration(time.perf_counter() - self.start)
            print(f"[{self.done}/{total} trials] {elapsed} elapsed", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"trial {trial.trial_id} failed: {trial.error_file}", file=sys.stderr, flush=True)

    return TrialsDone()
