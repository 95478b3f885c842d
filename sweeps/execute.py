"""Ray Tune execution: one trial per lineage (or pack of lineages), each row written to the store at once.

The store, not Ray's experiment state, is the source of truth: a trial writes each budget's row as soon as
it is final, and its lineage checkpoints let a retried trial continue where it stopped. A sweep started
again only needs the lineages whose rows the store lacks (see `missing_budgets`).

The driver imports this module to start the trials; only the trials train, so torch and the training code
are imported where a trial needs them, not here (0.7 s of the driver's start-up).
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import metadata
from typing import TYPE_CHECKING, TextIO

from powersweep.proxy_models.budgets import planned_tokens, trunk_tokens
from powersweep.proxy_models.curve_recorder import DEFAULT_GRID
from powersweep.rows import RunResult
from powersweep.sweeps.curve_store import curve_saver
from powersweep.sweeps.failures import fatal_stop, raise_fatal, reporting_fatal
from powersweep.sweeps.lineages import LineageJob, settings_id, short_hash
from powersweep.sweeps.progress import (
    TIMED,
    ExecutionReport,
    StatusPrinter,
    Tracker,
    trials_done_callback,
    tune_callback,
)
from powersweep.sweeps.spec import RunSpec, SpecError
from powersweep.sweeps.store import LineageRows, ResultStore
from powersweep.sweeps.trackers import LineageLog, lineage_logs, tracking_root
from powersweep.sweeps.trials import PackedJob, gpu_share, trial_budget_gib, trial_name

if TYPE_CHECKING:
    from powersweep.proxy_models.lineage import Attempt

PACKAGES = ("torch", "ray", "numpy", "pandas", "pyarrow", "powersweep")


@dataclass(frozen=True)
class ExecutionSettings:
    """Where results go and how trials run."""

    store_uri: str  # results store (local path or pyarrow/fsspec URI)
    sweep_id: str  # partition of the store this sweep writes
    checkpoint_root: str  # local or shared directory for lineage checkpoints
    # the spec's run: section (resources, retries, checkpoints, curves, trackers), as the spec gives it
    run: RunSpec = field(default_factory=RunSpec)
    # Ray GPUs of one trial: run.gpus_per_trial resolved ('auto': 0, each trial's estimate decides);
    # fractional GPUs pack several trials on one GPU
    gpus_per_trial: float = 0.0
    address: str | None = None  # existing Ray cluster; None starts a fresh local Ray in this process
    lineages_per_trial: int = 0  # 0 = auto: one trial per job up to MAX_TRIALS trials, then grouped
    # the driver process (sweeps.lock.holder()): trials store nothing once it is gone
    driver: dict | None = None
    gpu_memory_bytes: int | None = None  # memory of one GPU: each trial asks for its estimate's share of one
    # (at least gpus_per_trial) and plans its steps within it (sweeps.trials.gpu_share); None: gpus_per_trial
    # as is
    tracking_root: str | None = None  # where the trackers write; None = trackers.tracking_root(store_uri)
    # wall clock (time.time) of the driver's start (submit called), of Ray's start and of Ray ready: the first
    # parts of the start-up breakdown (sweeps/progress.py); None where the caller did not mark them
    startup_marks: tuple[float, float, float] | None = None

    @property
    def uses_gpu(self) -> bool:
        return bool(self.gpus_per_trial) or self.gpu_memory_bytes is not None


def missing_budgets(job: LineageJob, stored_run_ids: set[str]) -> LineageJob | None:
    """The job restricted to budgets without a stored row (None if complete), and to the missing trunk
    evaluations that the trunk passes on its way to those budgets.

    Dropping finished budgets changes no other result: each branch depends only on the trunk up to its own
    fork, and the trunk's lr up to any remaining budget's fork does not depend on the largest budget. A
    missing trunk evaluation keeps the budget forked there (its stored row is not written again), so the trunk
    passes it.
    """
    lost_trunk = {t for t, r in zip(job.trunk_tokens, job.trunk_run_ids) if r not in stored_run_ids}
    if not lost_trunk and stored_run_ids.issuperset(job.run_ids):
        return None  # the common case of a resume: nothing of this lineage to train
    forks = dict(zip(job.budgets, _fork_tokens(job)))
    keep = [
        (t, r) for t, r in zip(job.budgets, job.run_ids) if r not in stored_run_ids or forks[t] in lost_trunk
    ]
    if not keep:
        return None
    budgets, run_ids = zip(*keep)
    config = replace(job.config, tokens=max(budgets))
    last = max(trunk_tokens(config, budgets), default=0)
    trunk = [
        (t, r) for t, r in zip(job.trunk_tokens, job.trunk_run_ids) if r not in stored_run_ids and t <= last
    ]
    return replace(
        job,
        budgets=budgets,
        run_ids=run_ids,
        config=config,
        trunk_tokens=tuple(t for t, _ in trunk),
        trunk_run_ids=tuple(r for _, r in trunk),
    )


def _fork_tokens(job: LineageJob) -> list[int]:
    """Tokens seen at each budget's fork point, in `job.budgets` order (the trunk row taken there)."""
    return [max(trunk_tokens(job.config, [t]), default=0) for t in job.budgets]  # a branch: its own length


def missing_rows(trial: LineageJob | PackedJob, stored_run_ids: set[str]) -> PackedJob | None:
    """A trial restricted to its members with missing budget rows (see `missing_budgets`); None if none."""
    members = [missing_budgets(m, stored_run_ids) for m in _members(trial)]
    members = [m for m in members if m is not None]
    return PackedJob(tuple(members)) if members else None


def _members(trial: LineageJob | PackedJob) -> tuple[LineageJob, ...]:
    return trial.members if isinstance(trial, PackedJob) else (trial,)


@functools.cache
def provenance() -> dict[str, str]:
    """git revision and package versions recorded with every row."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"git_sha": _git_sha(), "versions": json.dumps(versions, sort_keys=True)}


def _git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=os.path.dirname(os.path.abspath(__file__)),
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def lineage_columns(job: LineageJob) -> dict:
    """The columns every row of `job`'s lineage shares: its ids and the provenance."""
    return {"lineage_id": job.lineage_id, "settings_id": settings_id(job.config), **provenance()}


def store_row(result: RunResult, *, shared: dict, run_id: str, execution: dict | None = None) -> dict:
    """A trainer row plus the ids and provenance the store needs (`shared`: `lineage_columns`); `execution`
    adds to the row's execution record (e.g. that its pack was split after running out of memory)."""
    row = {**result.to_row(), "run_id": run_id, **shared}
    if execution:
        row["execution"] = json.dumps({**json.loads(result.execution or "{}"), **execution}, sort_keys=True)
    return row


def run_job(
    job: LineageJob | PackedJob,
    settings: ExecutionSettings,
    *,
    attempt: Attempt | None = None,
    on_stored: Callable[[str, RunResult], None] | None = None,
    on_curve: Callable[[LineageJob, list[dict]], None] | None = None,
    execution: dict | None = None,
) -> list[list[RunResult]]:
    """Train one job (a lineage, or a pack of them in lockstep) and store each of its rows as soon as it is
    final: budget results and trunk evaluations, each after its lineage's curve points up to it (stored with
    `settings.run.curves`); points and rows are handed to the job's trackers (`settings.run.loggers`), which
    are fed from the curve recorder whether or not its points are stored. `on_stored(run_id, row)` follows
    each stored row; `on_curve(member, rows)` each batch of a member's curve points
    (`sweeps.curve_store.curve_records`), when the recorder runs (curves or loggers on); `attempt` is filled
    in with what this process did. On a GPU of known size the job's steps plan within its share
    (`sweeps.trials.gpu_share`). A pack that runs out of CUDA memory even at one sequence per micro-batch is
    split in two, each half training the rows still missing (`pack_split` in their rows' execution record).
    Returns each member's rows of the job's budgets, ascending (after a split: the rows the halves trained).
    """
    import torch

    from powersweep.proxy_models.lineage import Attempt

    job, attempt = _within_gpu_share(job, settings), attempt or Attempt()
    members = _members(job)
    try:
        with lineage_logs(
            members,
            loggers=settings.run.loggers,
            sweep_id=settings.sweep_id,
            root=settings.tracking_root or tracking_root(settings.store_uri),
        ) as logs:
            return _train_job(
                members,
                settings,
                attempt=attempt,
                on_stored=on_stored,
                on_curve=on_curve,
                execution=execution,
                logs=logs,
            )
    except torch.cuda.OutOfMemoryError:
        if len(members) == 1:
            raise
    # Outside `except`: the failed pack's tensors are freed by now.
    stored = stored_rows(members, settings)
    splits, rows = (execution or {}).get("pack_split", 0) + 1, []
    for half in (members[: len(members) // 2], members[len(members) // 2 :]):
        rest = missing_rows(PackedJob(half), stored)
        if rest is not None:
            rows += run_job(
                rest,
                settings,
                attempt=attempt,
                on_stored=on_stored,
                on_curve=on_curve,
                execution={"pack_split": splits},
            )
    return rows


def _train_job(
    members: Sequence[LineageJob],
    settings: ExecutionSettings,
    *,
    attempt: Attempt,
    on_stored: Callable[[str, RunResult], None] | None,
    on_curve: Callable[[LineageJob, list[dict]], None] | None,
    execution: dict | None,
    logs: Sequence,
) -> list[list[RunResult]]:
    """`run_job`'s training; `logs` holds each member's LineageLog (None without loggers)."""
    from powersweep.proxy_models.lineage import train_lineage, train_packed_lineage

    root = os.path.join(settings.checkpoint_root, settings.sweep_id)
    # the recorder is cheap: trackers use it
    recorded = settings.run.curves or any(log is not None for log in logs)
    stored = stored_rows(members, settings)
    common = dict(
        checkpoint_every_steps=settings.run.checkpoint_every_steps,
        attempt=attempt,
        redo=lost_rows(members, stored),
        curve_grid=DEFAULT_GRID if recorded else None,
    )
    savers = [_saver(m, settings, stored, on_stored, execution, log) for m, log in zip(members, logs)]
    curves = (
        [_curve_writer(m, settings, on_curve, log) for m, log in zip(members, logs)] if recorded else None
    )
    if len(members) == 1:
        m = members[0]
        checkpoint_dir = _whole_curve(os.path.join(root, m.lineage_id), members, settings, stored)
        rows = [
            train_lineage(
                m.config,
                m.budgets,
                trunk_at=m.trunk_tokens,
                checkpoint_dir=checkpoint_dir,
                on_result=savers[0],
                on_curve=curves and curves[0],
                **common,
            )
        ]
        return rows
    packed = PackedJob(tuple(members))
    checkpoint_dir = os.path.join(root, "pack-" + short_hash(sorted(m.lineage_id for m in members)))
    checkpoint_dir = _whole_curve(checkpoint_dir, members, settings, stored)
    rows = train_packed_lineage(
        packed.config,
        [m.config.schedule for m in members],
        packed.budgets,
        seeds=[m.config.seed for m in members],
        trunk_at=packed.trunk_tokens,
        checkpoint_dir=checkpoint_dir,
        on_result=lambda i, row: savers[i](row),
        on_curve=curves and (lambda i, points: curves[i](points)),
        **common,
    )
    return rows


def stored_rows(members: Sequence[LineageJob], settings: ExecutionSettings) -> set[str]:
    """The row ids of `members` that the store holds now, readable."""
    store = ResultStore(settings.store_uri)
    names = store.stored_names(sweep_id=settings.sweep_id, lineages=[m.lineage_id for m in members])
    return {r for m in members for r in m.row_ids} & names


def _whole_curve(
    checkpoint_dir: str, members: Sequence[LineageJob], settings: ExecutionSettings, stored: set[str]
) -> str:
    """`checkpoint_dir`, emptied first when a member has stored rows but no stored curve (deleted, or set
    aside as unreadable; a curve is written before each row): resumed from its checkpoint, the lineage would
    store a curve without its earlier points, so it trains again from the start (its stored rows are not
    written again). Before its first row a lineage's points wait in the checkpointed recorder: resuming loses
    none."""
    store = ResultStore(settings.store_uri)

    def curve_lost(m: LineageJob) -> bool:
        return (
            bool(stored & set(m.row_ids))
            and store.read_curve(sweep_id=settings.sweep_id, name=m.lineage_id) is None
        )

    if settings.run.curves and os.path.isdir(checkpoint_dir) and any(curve_lost(m) for m in members):
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    return checkpoint_dir


def _curve_writer(
    job: LineageJob,
    settings: ExecutionSettings,
    on_curve: Callable[[LineageJob, list[dict]], None] | None,
    log: LineageLog | None = None,
) -> Callable[[list[dict]], None]:
    """Merges `job`'s curve points into its lineage's curve file (with `settings.run.curves`, while the driver
    lives), hands them to `log` (the job's trackers), then to `on_curve`. The trackers skip the points of the
    stored curve: an earlier attempt at the lineage stored them, then sent them."""
    curve = None
    if settings.run.curves:
        curve = ResultStore(settings.store_uri).curve_writer(sweep_id=settings.sweep_id, name=job.lineage_id)
        if log is not None:
            log.skip(curve.points())

    def write(rows: list[dict]) -> None:
        if curve is not None:
            check_driver(settings.driver)
            curve.write(rows)
        if log is not None:
            log.curve(rows)

    return curve_saver(job, write, on_curve)


def trial_gpus(jobs: Sequence[LineageJob | PackedJob], settings: ExecutionSettings) -> float:
    """GPUs a trial running `jobs` asks Ray for: the largest of their shares on a GPU of known size, else
    gpus_per_trial."""
    if settings.gpu_memory_bytes is None:
        return settings.gpus_per_trial
    return max(
        gpu_share(j, gpu_bytes=settings.gpu_memory_bytes, requested=settings.gpus_per_trial)[0] for j in jobs
    )


def _within_gpu_share(job: LineageJob | PackedJob, settings: ExecutionSettings) -> LineageJob | PackedJob:
    """The job with its members' step memory budget set to its share of the GPU (on a GPU of known size), so
    that `micro_batch_size: auto` plans within it and not within whatever other trials left free."""
    import torch

    if settings.gpu_memory_bytes is None:
        return job
    share = trial_gpus([job], settings)
    budget = trial_budget_gib(job, share, gpu_bytes=settings.gpu_memory_bytes)
    members = tuple(replace(m, config=replace(m.config, memory_budget_gib=budget)) for m in _members(job))
    # the allocator enforces the share: an overrun is this trial's OOM, not another's
    if torch.cuda.is_available():
        torch.cuda.set_per_process_memory_fraction(min(share, 1.0))
    return PackedJob(members) if isinstance(job, PackedJob) else members[0]


def lost_rows(members: Sequence[LineageJob], stored: set[str]) -> set[tuple[str, float]]:
    """(phase, tokens) of the rows a job asks for that the store cannot read now: whatever the lineage's
    checkpoint recorded, they are trained again (the store, not the checkpoint, says what is done)."""
    lost = set()
    for m in members:
        rows = [
            *(("final", t, r) for t, r in zip(m.budgets, m.run_ids)),
            *(("trunk", t, r) for t, r in zip(m.trunk_tokens, m.trunk_run_ids)),
        ]
        lost |= {(phase, float(t)) for phase, t, r in rows if r not in stored}
    return lost


def _saver(
    job: LineageJob,
    settings: ExecutionSettings,
    stored: set[str],
    on_stored: Callable[[str, RunResult], None] | None,
    execution: dict | None = None,
    log: LineageLog | None = None,
):
    """Writes a row of `job` to the store if the job asks for it (a pack trains the union of its members'
    budgets; each member writes only its own missing rows), then hands it to `log`, the job's trackers. A row
    stored before a retry is not written again. The rows go to the lineage's file
    (`ResultStore.lineage_rows`), opened at the first row to write."""
    lineage_rows: LineageRows | None = None
    shared = lineage_columns(job)
    ids = {
        **{("final", t): r for t, r in zip(job.budgets, job.run_ids)},
        **{("trunk", t): r for t, r in zip(job.trunk_tokens, job.trunk_run_ids)},
    }

    def save(result: RunResult) -> None:
        nonlocal lineage_rows
        run_id = ids.get((result.phase, result.tokens))
        if run_id is None:
            return
        if run_id not in stored:
            check_driver(settings.driver)
            if lineage_rows is None:
                store = ResultStore(settings.store_uri)
                lineage_rows = store.lineage_rows(sweep_id=settings.sweep_id, lineage_id=job.lineage_id)
            lineage_rows.write(
                [store_row(result, shared=shared, run_id=run_id, execution=execution)], name=run_id
            )
        if log is not None:
            log.row(result)
        if on_stored is not None:
            on_stored(run_id, result)

    return save


class DriverGone(RuntimeError):
    """The sweep's driver process has ended: its trials must not write any more rows."""


def check_driver(driver: dict | None) -> None:
    """Raise DriverGone if `driver` (host, pid, start time) is known to have ended; on another host the
    cluster ends the driver's trials with it."""
    from powersweep.sweeps.lock import describe, is_alive

    if driver is not None and is_alive(driver) is False:
        raise DriverGone(f"the sweep's driver, {describe(driver)}, has ended: nothing more is stored")


# A stored row's columns that each report carries to Tune (its result.json and progress.csv, and so
# ExperimentAnalysis and ResultGrid): what the row trained and what it measured.
TUNE_COLUMNS = (
    "model", "schedule", "parametrisation", "batch_size", "seq_len", "lr", "power_a", "power_b", "lr_max",
    "seed", "phase", "tokens", "loss_eval", "ppl_eval", "loss_train", "status", "n_params", "wall_s",
    "tokens_per_s",
)  # fmt: skip


def tune_metrics(job: LineageJob, result: RunResult) -> dict:
    """A stored row as Tune metrics: the columns of `TUNE_COLUMNS`, `diverged` (0 or 1) and the row's lineage;
    the store stays the record, these let Tune's own readers and loggers show the sweep."""
    metrics = {name: getattr(result, name) for name in TUNE_COLUMNS}
    return metrics | {"diverged": int(result.status == "diverged"), "lineage_id": job.lineage_id}


def _trial(params: dict) -> None:
    """One Ray Tune trial: its jobs one after another, reporting after each stored row (its `tune_metrics`)
    and after each job (a job's last row is recorded after it is reported). The time in Ray's reports is
    Ray's: a report runs while its row is recorded, so it is taken out of the store writes and of the trial's
    time."""
    from ray import tune

    from powersweep.proxy_models.lineage import Attempt

    started_at, start = time.time(), time.perf_counter()  # wall clock: the driver's start-up ends here
    finished, reported = dict.fromkeys(TIMED, 0.0), []
    reporting_s = 0.0  # in the reports made while rows were recorded

    first: Attempt | None = None  # the first attempt that trained a step: the trial's start-up

    def report(run_id: str, metrics: dict, *, recording: bool = True) -> None:
        nonlocal reporting_s, first
        began = time.perf_counter()
        times = {key: finished[key] + getattr(attempt, key) for key in TIMED}
        times["record_s"] -= reporting_s
        if first is None and attempt.first_step_at is not None:
            first = attempt
        tune.report(
            {
                **metrics,
                "run_id": run_id,
                "worker_pid": os.getpid(),
                "started_at": started_at,
                "trial_s": began - start - reporting_s,
                **times,
                **(startup_report(first) if first is not None else {}),
            }
        )
        if recording:
            reported.append((run_id, metrics))
            reporting_s += time.perf_counter() - began

    member_of = {r: m for job in params["jobs"] for m in _members(job) for r in m.row_ids}

    def stored(run_id: str, result: RunResult) -> None:
        report(run_id, tune_metrics(member_of[run_id], result))

    for job in params["jobs"]:
        attempt = Attempt()
        run_job(job, params["settings"], attempt=attempt, on_stored=stored)
        if reported:  # the job's times once its last row is recorded: that row again, counted once
            report(*reported[-1], recording=False)
        for key in TIMED:
            finished[key] += getattr(attempt, key)


def startup_report(attempt: Attempt) -> dict:
    """What a trial reports of its start-up: its first trainer's setup seconds and first step's span."""
    return {
        **{f"setup_{part}_s": seconds for part, seconds in attempt.setup.items()},
        "first_step_start_at": attempt.first_step_at[0],
        "first_step_end_at": attempt.first_step_at[1],
    }


MAX_TRIALS = 256  # above this many jobs, a trial runs several (Tune's cost grows with the trial count)


def trial_groups(jobs: Sequence, jobs_per_trial: int = 0) -> list[tuple]:
    """The jobs of each trial, in order:
    `jobs_per_trial` each, or (0) as many as keep it to MAX_TRIALS trials."""
    size = jobs_per_trial or math.ceil(len(jobs) / MAX_TRIALS)
    return [tuple(jobs[i : i + size]) for i in range(0, len(jobs), size)]


def longest_first(jobs: Sequence[LineageJob | PackedJob], *, device: str = "cpu") -> list:
    """`jobs` by estimated duration, longest first (equal estimates keep their order).

    Trials start in this order, so the last slots to free up hold short jobs: a sweep whose jobs differ in
    size (models, batch sizes, budgets) does not end waiting on one long straggler.
    """
    return sorted(jobs, key=lambda job: job_cost(job, device=device), reverse=True)


# A step's fixed cost (dispatch, optimizer, data), in the matmul FLOPs the device does in the same time; only
# used to order jobs. CPU: cpu-xxs at batch 4 x 64 spends ~2.5 ms of its ~4.6 ms step on it at ~23 GFLOP/s
# (its step time at batch 4 and 8, one thread). GPU: an assumed ~5 ms per step at ~200 TFLOP/s.
STEP_OVERHEAD_FLOPS = {"cpu": 6e7, "gpu": 1e12}


def job_cost(job: LineageJob | PackedJob, *, device: str = "cpu") -> float:
    """Estimated duration of a job, in FLOP-equivalents: its training FLOPs (6 * active params * planned
    tokens * variants) plus a fixed cost per optimizer step, which small models are bound by."""
    config = job.config
    tokens = planned_tokens(config, job.budgets)
    flops = 6 * config.proxy.num_params(active=True) * tokens * len(_members(job))
    return flops + tokens // config.tokens_per_step * STEP_OVERHEAD_FLOPS[device]


# Tune's defaults that cost time per trial and are of no use here: the store holds every result, so Tune's
# automatic loggers are off and its experiment state is saved rarely. `build_tuner` adds back its JSON and CSV
# loggers (result.json, progress.csv in each trial's folder: what ExperimentAnalysis and ResultGrid read), one
# line per stored row on the driver; its TensorBoard logger stays off (`run.loggers: [tensorboard]` writes
# each lineage's curve from inside its trial).
# Tune's newer console output prints its configuration and every errored trial's result table whatever the
# verbosity; the classic reporter at verbose=0 prints nothing, and the sweep's own status line says the rest.
TUNE_ENV = {
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    "TUNE_GLOBAL_CHECKPOINT_S": "60",
    "RAY_AIR_NEW_OUTPUT": "0",
}


class _OneLine(logging.Filter):
    """Tune logs a failed trial attempt with its traceback; a person gets its last line (the trial's own
    traceback stays in its error file, which the sweep's status names when the trial fails for good)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            lines = str(record.exc_info[1]).strip().splitlines() or [type(record.exc_info[1]).__name__]
            record.msg, record.args, record.exc_info = f"{record.getMessage()}: {lines[-1]}", (), None
        return True


def build_tuner(
    trainable: Callable,
    settings: ExecutionSettings,
    *,
    param_space: dict,
    callbacks: Sequence = (),
    stop=None,
    **tune_options,
):
    """The Tuner of a sweep: our resources, concurrency, retries and Tune settings; `tune_options` go to
    TuneConfig (e.g. a search_alg and num_samples). The trainable reports a deterministic error instead of
    raising it (`sweeps.failures`), and `stop` (a `failures.fatal_stop()`) then ends every trial."""
    from ray import tune

    for name, value in TUNE_ENV.items():
        os.environ.setdefault(name, value)  # read by Tune when fit() starts; a value set by the user wins
    # A trial that stored nothing (all its rows were stored before) has no result files: Tune would warn.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # Tune's experiment state is not the sweep's record (the store is): a failed save of it (a full disk) is
    # no news to a person, and the trials' own writes say what went wrong in one line (sweeps/failures.py).
    logging.getLogger("ray.tune.execution.experiment_state").setLevel(logging.CRITICAL)
    controller = logging.getLogger("ray.tune.execution.tune_controller")
    if not any(isinstance(f, _OneLine) for f in controller.filters):
        controller.addFilter(_OneLine())
    from ray.tune.logger import CSVLoggerCallback

    resources = tune.with_resources(
        reporting_fatal(trainable),
        _resources(settings)
        if settings.gpu_memory_bytes is not None
        else {"cpu": settings.run.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    concurrency = settings.run.max_concurrent or None
    if tune_options.get("search_alg") is not None:
        # With a searcher Tune starts one trial's process at a time, unless a ConcurrencyLimiter says how
        # many trials may run at once: then as many as there are trials waiting (up to MAX_TRIALS).
        from ray.tune.search import ConcurrencyLimiter

        tune_options["search_alg"] = ConcurrencyLimiter(
            tune_options["search_alg"], max_concurrent=concurrency or MAX_TRIALS
        )
        concurrency = None
    return tune.Tuner(
        resources,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, reuse_actors=True, **tune_options),
        run_config=tune.RunConfig(
            name=settings.sweep_id,
            storage_path=os.path.abspath(os.path.join(settings.checkpoint_root, "ray")),
            failure_config=tune.FailureConfig(max_failures=settings.run.max_retries),
            verbose=0,
            callbacks=[_json_logger(), CSVLoggerCallback(), *callbacks],
            stop=stop,
        ),
    )


def run_trials(tuner) -> int:
    """Run the Tuner's trials; how many of them errored."""
    with _no_callback_usage_tag():
        return sum(1 for result in tuner.fit() if result.error is not None)


@contextlib.contextmanager
def _no_callback_usage_tag():
    """Ray Tune's fit() tags its usage statistics with which of its built-in callbacks a run uses, and to name
    them imports every tracker integration it ships: with them mlflow and wandb, where installed, 2.3 s of the
    driver's CPU on a 2-core machine before the first trial can start. A sweep's callbacks are its own, so
    while its trials run the tag is left out (as `sweeps.interrupt` sets Ray's functions aside, and back)."""
    try:
        from ray.air._internal import usage
    except ImportError:
        usage = None
    tag = getattr(usage, "tag_callbacks", None)
    if tag is None:  # a Ray without that tag: nothing to leave out
        yield
        return
    usage.tag_callbacks = lambda callbacks: False
    try:
        yield
    finally:
        usage.tag_callbacks = tag


def _json_logger():
    """Tune's JSON logger (result.json), without a copy of the trial's config (its jobs) on every line: the
    config is in the trial's params.json once, as Tune's CSV logger leaves it out of progress.csv."""
    from ray.tune.logger import JsonLoggerCallback

    class RowsJson(JsonLoggerCallback):
        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            super().log_trial_result(iteration, trial, {k: v for k, v in result.items() if k != "config"})

    return RowsJson()


def trial_namer(groups: Sequence[tuple]) -> Callable:
    """Tune's trial_name_creator (and dirname) for a grid over `groups` (`{"jobs": grid_search(groups)}`):
    each trial is named `trials.trial_name` of its jobs. Tune keeps objects out of trial configs: a trial's
    config holds placeholders of its jobs, those that Tune's own `inject_placeholders` makes of that grid."""
    from collections import defaultdict

    from ray.tune.impl.placeholder import inject_placeholders

    grid = inject_placeholders({"jobs": {"grid_search": list(groups)}}, defaultdict(list))
    names = {json.dumps(ph): trial_name(g) for ph, g in zip(grid["jobs"]["grid_search"], groups)}

    def name(trial) -> str:
        return names.get(json.dumps(trial.config["jobs"], default=str)) or f"trial_{trial.trial_id}"

    return name


def _resources(settings: ExecutionSettings) -> Callable:
    """Each trial's Ray resources from its jobs (a grid's, or a round's from the searcher): its CPUs and its
    share of a GPU (`trial_gpus`); a trial without jobs in its config (an Optuna search's) asks for
    `settings.gpus_per_trial`."""
    from ray.tune import PlacementGroupFactory

    def resources(config: dict) -> PlacementGroupFactory:
        jobs = config.get("jobs")
        gpus = trial_gpus(jobs, settings) if jobs else settings.gpus_per_trial
        return PlacementGroupFactory([{"CPU": settings.run.cpus_per_trial, "GPU": gpus}])

    return resources


def init_ray(settings: ExecutionSettings) -> None:
    """Start a fresh local Ray (or attach to `settings.address`) unless Ray is running in this process."""
    import ray

    if ray.is_initialized():
        return
    from powersweep.sweeps.interrupt import ray_starting
    from powersweep.sweeps.lifetime import ray_of_this_driver
    from powersweep.sweeps.loopback import loopback_only

    # "local", not None: None would attach to any cluster a `ray start` left on this machine.
    local = settings.address in (None, "local")
    with contextlib.ExitStack() as local_only:
        # first in, last out: a signal held while Ray starts is raised once the watchdog runs, and Ray's own
        # signal handlers give way to the driver's (sweeps/interrupt.py)
        local_only.enter_context(ray_starting())
        if local:  # it ends with this driver and listens on 127.0.0.1 only
            local_only.enter_context(ray_of_this_driver())
            local_only.enter_context(loopback_only())
            # Whether this private Ray uses a token is no news at every submit: keep stderr to our lines.
            logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
                logging.ERROR
            )
        ray.init(
            address=settings.address or "local",
            include_dashboard=False,
            configure_logging=False,
            log_to_driver=False,
        )


def check_resources(settings: ExecutionSettings) -> None:
    """A trial's CPUs and GPUs must fit on one node of the cluster as it is now, else Tune would wait forever:
    SpecError naming the field, what the largest node has and the fix."""
    import ray

    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for name, key, need in (
        ("cpus_per_trial", "CPU", settings.run.cpus_per_trial),
        ("gpus_per_trial", "GPU", settings.gpus_per_trial),
    ):
        largest = max((node.get(key, 0.0) for node in nodes), default=0.0)
        if need > largest:
            raise SpecError(
                f"run.{name}={need:g}: no node of the Ray cluster has that many ({largest:g} {key}s on "
                f"the largest of its {len(nodes)} nodes), so no trial could start: lower run.{name} "
                "or add such a node"
            )


def slots(settings: ExecutionSettings, trials: int) -> int:
    """How many trials run at once: the concurrency limit, else what the cluster's resources allow."""
    import ray

    resources = ray.cluster_resources()
    fits = [resources.get("CPU", 0) / settings.run.cpus_per_trial] if settings.run.cpus_per_trial else []
    if settings.gpus_per_trial:
        fits.append(resources.get("GPU", 0) / settings.gpus_per_trial)
    limit = int(min(fits)) if fits else trials
    return max(1, min(trials, settings.run.max_concurrent or limit, limit))


Job = LineageJob | PackedJob


def execute(
    jobs: Sequence[Job],
    settings: ExecutionSettings,
    *,
    stream: TextIO | None = None,
    next_round: Callable[[], Sequence[Job]] | None = None,
) -> ExecutionReport:
    """Run every job (a lineage or a pack of lineages) in Ray Tune trials, with a status line on `stream`
    (stderr) as rows are stored. Returns the number of trials that errored and where the wall time went.

    With `next_round`, the jobs are a first round: once every trial of a round has ended without an error,
    `next_round()` gives the next round's jobs (from the rows stored so far), until it gives none. The rounds
    run in one Tuner, so a round's trials take the processes of the round before where Tune can reuse them."""
    members = [m for job in jobs for m in _members(job)]
    tracker = Tracker(members, marks=settings.startup_marks, rounds=next_round is not None)
    if not jobs:
        return tracker.report(failed_trials=0, slots=0)
    init_ray(settings)
    device = "gpu" if settings.uses_gpu else "cpu"

    def trials(round_jobs: Sequence[Job]) -> list[tuple]:
        return trial_groups(longest_first(round_jobs, device=device), settings.lineages_per_trial)

    groups = trials(jobs)
    most = [len(groups)]  # trials of the largest round
    if settings.gpu_memory_bytes is not None:  # the largest share stands for all in the checks below
        settings = replace(settings, gpus_per_trial=max(trial_gpus(g, settings) for g in groups))
    check_resources(settings)
    printer, stop, raised = StatusPrinter(tracker, stream=stream), fatal_stop(), []
    if next_round is None:
        from ray import tune

        namer = trial_namer(groups)
        trial_space = {"param_space": {"jobs": tune.grid_search(groups), "settings": settings}}
    else:

        def later() -> list[tuple]:
            try:
                more = next_round()
            except Exception as error:  # the rounds end, Tune ends as usual, then it is raised as it was
                raised.append(error)
                return []
            if not more:
                return []
            tracker.add([m for job in more for m in _members(job)])
            round_groups = trials(more)
            most.append(len(round_groups))
            return round_groups

        namer = _round_trial_name
        trial_space = {
            "param_space": {"settings": settings},
            "search_alg": _rounds(groups, later),
            "num_samples": -1,
        }
    tuner = build_tuner(
        _trial,
        settings,
        callbacks=[tune_callback(printer)],
        stop=stop,
        trial_name_creator=namer,
        trial_dirname_creator=namer,
        **trial_space,
    )
    failed = run_trials(tuner)
    printer.update(final=True)
    raise_fatal(stop, log_dirs=log_dirs(settings))
    if raised:
        raise raised[0]
    return tracker.report(failed_trials=failed, slots=slots(settings, max(most)))


def _rounds(first: Sequence[tuple], later: Callable[[], Sequence[tuple]]):
    """A Tune searcher handing out trials round by round: `first`'s trial groups, then, once every trial of
    a round has ended and none with an error, the groups `later()` gives, until it gives none."""
    from collections import deque

    from ray.tune.search import Searcher

    class Rounds(Searcher):
        def __init__(self):
            super().__init__()
            self.waiting, self.running, self.failed, self.round = deque(first), set(), False, 1

        def set_search_properties(self, metric, mode, config, **spec) -> bool:
            return True  # the trials' jobs come from the rounds; param_space holds only constants

        def suggest(self, trial_id: str) -> dict | str | None:
            if not self.waiting and not self.running:
                if self.failed:  # its rows are missing: `resume` trains them, then goes on
                    return Searcher.FINISHED
                self.waiting.extend(later())
                self.round += 1
                if not self.waiting:
                    return Searcher.FINISHED
            if not self.waiting:
                return None  # the round's last trials are running: Tune asks again later
            self.running.add(trial_id)
            return {"jobs": self.waiting.popleft(), "round": self.round}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            self.running.discard(trial_id)
            self.failed |= error

        def save(self, checkpoint_path: str) -> None:
            """Nothing to save: the store holds what each round asks for."""

    return Rounds()


def _round_trial_name(trial) -> str:
    """A trial's name in a sweep of rounds: its jobs' (`trials.trial_name`), after the first its round."""
    name, round_number = trial_name(trial.config["jobs"]), trial.config["round"]
    return name if round_number == 1 else f"{name}_round{round_number}"


def log_dirs(settings: ExecutionSettings) -> list[str]:
    """Where a trial's traceback is written for a person: beside the sweep's checkpoints (local)."""
    return [os.path.join(settings.checkpoint_root, settings.sweep_id, "logs")]


def fit(
    trainable: Callable, settings: ExecutionSettings, *, param_space: dict, total: int, **tune_options
) -> int:
    """Run `trainable`'s trials (e.g. an Optuna search's) with the sweep's settings and a line per finished
    trial; returns the number of trials that errored."""
    init_ray(settings)
    check_resources(settings)
    stop = fatal_stop()
    tuner = build_tuner(
        trainable,
        settings,
        param_space=param_space,
        callbacks=[trials_done_callback(total)],
        stop=stop,
        **tune_options,
    )
    failed = run_trials(tuner)
    raise_fatal(stop, log_dirs=log_dirs(settings))
    return failed
