"""Ray Tune execution: one trial per lineage (or pack of lineages), each row written to the store at once.

The store, not Ray's experiment state, is the source of truth: a trial writes each budget's row as soon as
it is final, and its lineage checkpoints let a retried trial continue where it stopped. A sweep started
again only needs the lineages whose rows the store lacks (see `missing_budgets`).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from importlib import metadata

from proxy_models.lineage import train_lineage, train_packed_lineage, trunk_tokens
from proxy_models.trainer import RunResult
from sweeps.plan import LineageJob, PackedJob, short_hash
from sweeps.store import ResultStore

PACKAGES = ("torch", "ray", "numpy", "pandas", "pyarrow", "powersweep")


@dataclass(frozen=True)
class ExecutionSettings:
    """Where results go and how trials run."""

    store_uri: str  # results store (local path or pyarrow/fsspec URI)
    sweep_id: str  # partition of the store this sweep writes
    checkpoint_root: str  # local or shared directory for lineage checkpoints
    cpus_per_trial: float = 1.0  # Ray resources of one trial
    gpus_per_trial: float = 0.0  # fractional GPUs pack several trials on one GPU
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_retries: int = 2  # retries of a crashed trial (it resumes from its checkpoint)
    address: str | None = None  # existing Ray cluster; None starts a fresh local Ray in this process


def missing_budgets(job: LineageJob, stored_run_ids: set[str]) -> LineageJob | None:
    """The job restricted to budgets without a stored row (None if complete), and to the missing trunk
    evaluations that the trunk passes on its way to those budgets.

    Dropping finished budgets changes no other result: each branch depends only on the trunk up to its own
    fork, and the trunk's lr up to any remaining budget's fork does not depend on the largest budget.
    """
    keep = [(t, r) for t, r in zip(job.budgets, job.run_ids) if r not in stored_run_ids]
    if not keep:
        return None
    budgets, run_ids = zip(*keep)
    config = replace(job.config, tokens=max(budgets))
    last = max(trunk_tokens(config, budgets), default=0)
    trunk = [(t, r) for t, r in zip(job.trunk_tokens, job.trunk_run_ids) if r not in stored_run_ids and t <= last]
    return replace(job, budgets=budgets, run_ids=run_ids, config=config,
                   trunk_tokens=tuple(t for t, _ in trunk), trunk_run_ids=tuple(r for _, r in trunk))


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
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=os.path.dirname(os.path.abspath(__file__)))
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def store_row(result: RunResult, *, job: LineageJob, run_id: str) -> dict:
    """A trainer row plus the ids and provenance the store needs."""
    return {**result.to_row(), "run_id": run_id, "lineage_id": job.lineage_id, **provenance()}


def run_job(job: LineageJob | PackedJob, settings: ExecutionSettings) -> list[list[RunResult]]:
    """Train one trial (a lineage, or a pack of them in lockstep) and store each row of the job as soon as it
    is final: budget results and trunk evaluations. Returns each member's rows of the trial's budgets, ascending."""
    members = _members(job)
    root = os.path.join(settings.checkpoint_root, settings.sweep_id)
    if len(members) == 1:
        m = members[0]
        return [train_lineage(m.config, m.budgets, trunk_at=m.trunk_tokens,
                              checkpoint_dir=os.path.join(root, m.lineage_id), on_result=_saver(m, settings))]
    packed, savers = PackedJob(members), [_saver(m, settings) for m in members]
    checkpoint_dir = os.path.join(root, "pack-" + short_hash(sorted(m.lineage_id for m in members)))
    return train_packed_lineage(packed.config, [m.config.schedule for m in members], packed.budgets,
                                trunk_at=packed.trunk_tokens, checkpoint_dir=checkpoint_dir,
                                on_result=lambda i, row: savers[i](row))


def _saver(job: LineageJob, settings: ExecutionSettings) -> Callable[[RunResult], None]:
    """Writes a row of `job` to the store if the job asks for it (a pack trains the union of its members'
    budgets; each member writes only its own missing rows)."""
    store = ResultStore(settings.store_uri)
    ids = {**{("final", t): r for t, r in zip(job.budgets, job.run_ids)},
           **{("trunk", t): r for t, r in zip(job.trunk_tokens, job.trunk_run_ids)}}

    def save(result: RunResult) -> None:
        run_id = ids.get((result.phase, result.tokens))
        if run_id is not None:
            store.write([store_row(result, job=job, run_id=run_id)], sweep_id=settings.sweep_id, name=run_id)

    return save


def _trial(params: dict) -> None:
    from ray import tune

    run_job(params["job"], params["settings"])
    tune.report({"budgets_done": len(params["job"].budgets)})


def _progress_callback(total: int):
    """A Tune callback printing one status line per finished trial."""
    import sys
    import time

    from ray import tune

    class Progress(tune.Callback):
        def __init__(self):
            self.done, self.start = 0, time.perf_counter()

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.done += 1
            elapsed = time.perf_counter() - self.start
            print(f"[{self.done}/{total} lineages] {elapsed:.0f}s elapsed", file=sys.stderr, flush=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"trial {trial.trial_id} failed: {trial.error_file}", file=sys.stderr, flush=True)

    return Progress()


def execute(jobs: Sequence[LineageJob | PackedJob], settings: ExecutionSettings) -> int:
    """Run every job (a lineage or a pack of lineages) as a Ray Tune trial; returns the number of trials that
    errored."""
    from ray import tune

    if not jobs:
        return 0
    return fit(_trial, settings, param_space={"job": tune.grid_search(list(jobs)), "settings": settings},
               total=len(jobs))


def fit(trainable, settings: ExecutionSettings, *, param_space: dict, total: int, **tune_options) -> int:
    """Run `trainable`'s trials with the sweep's resources, concurrency, retries and progress callback.

    `tune_options` go to TuneConfig (e.g. a search_alg and num_samples); returns the trials that errored.
    """
    import ray
    from ray import tune

    if not ray.is_initialized():
        # "local", not None: None would attach to any cluster a `ray start` left on this machine.
        ray.init(address=settings.address or "local", include_dashboard=False, configure_logging=False,
                 log_to_driver=False)
    trainable = tune.with_resources(trainable, {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial})
    tuner = tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(max_concurrent_trials=settings.max_concurrent or None, reuse_actors=True,
                                    **tune_options),
        run_config=tune.RunConfig(
            name=settings.sweep_id, storage_path=os.path.abspath(os.path.join(settings.checkpoint_root, "ray")),
            failure_config=tune.FailureConfig(max_failures=settings.max_retries), verbose=0,
            callbacks=[_progress_callback(total)],
        ),
    )
    return sum(1 for r in tuner.fit() if r.error is not None)
