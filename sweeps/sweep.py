"""The public sweep layer: submit a spec (or resume one) and ask for its status. Thin over plan, execute
and the store."""

from __future__ import annotations

import os
from dataclasses import dataclass

from sweeps.execute import ExecutionSettings, execute, missing_rows
from sweeps.plan import Plan, plan
from sweeps.progress import ExecutionReport
from sweeps.spec import SpecError, SweepSpec, spec_from_dict
from sweeps.store import ResultStore, StoreError


@dataclass(frozen=True)
class SubmitResult:
    plan: Plan
    lineages_run: int  # lineages that still had missing budgets (trained in packs of run.pack)
    failed_trials: int
    storage: str
    execution: ExecutionReport | None  # where the wall time went (None for an Optuna search)


def spec_path(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}/spec.json"


def submit(spec: SweepSpec, *, storage: str | None = None, address: str | None = None) -> SubmitResult:
    """Run what the store lacks of `spec`'s plan; the resolved spec is stored next to the results."""
    storage = _absolute(storage or spec.storage)  # Ray trials run in their own working directories
    if address not in (None, "local"):
        _check_cluster_storage(storage, address)
    store = ResultStore(storage)
    store.write_json(spec_path(spec.name), spec.to_dict())
    p = plan(spec)
    stored = store.run_ids(sweep_id=spec.name)
    jobs = [j for j in (missing_rows(trial, stored) for trial in p.trials) if j is not None]
    settings = ExecutionSettings(
        store_uri=storage, sweep_id=spec.name, checkpoint_root=_checkpoint_root(storage),
        cpus_per_trial=spec.run.cpus_per_trial, gpus_per_trial=spec.run.gpus_per_trial,
        max_concurrent=spec.run.max_concurrent, max_retries=spec.run.max_retries, address=address,
        checkpoint_every_steps=spec.run.checkpoint_every_steps,
    )
    if p.studies:
        from sweeps.search import run_studies  # imports Ray and Optuna: only when a search runs

        search = run_studies(p.studies, settings)
        return SubmitResult(plan=p, lineages_run=search.trials_run, failed_trials=search.failed_trials,
                            storage=storage, execution=None)
    if p.searches:
        from sweeps.rounds import run_rounds  # adaptive mode: rounds until every group's search ends

        rounds = run_rounds(p.searches, settings, pack=p.pack)
        return SubmitResult(plan=p, lineages_run=rounds.lineages_run, failed_trials=rounds.failed_trials,
                            storage=storage, execution=rounds.execution)
    report = execute(jobs, settings)
    return SubmitResult(plan=p, lineages_run=sum(len(j.members) for j in jobs), failed_trials=report.failed_trials,
                        storage=storage, execution=report)


def resume(storage: str, *, sweep_id: str | None = None, address: str | None = None) -> SubmitResult:
    """Submit the stored spec again: only the runs the store lacks are trained."""
    return submit(stored_spec(storage, sweep_id=sweep_id), storage=storage, address=address)


def stored_spec(storage: str, *, sweep_id: str | None = None) -> SweepSpec:
    sweep_id = sweep_id or _only_sweep(storage)
    try:
        return spec_from_dict(ResultStore(storage).read_json(spec_path(sweep_id)))
    except StoreError:
        raise SpecError(f"no sweep {sweep_id!r} in {storage!r}: submit a spec there first") from None


def _only_sweep(storage: str) -> str:
    names = sorted(os.listdir(os.path.join(storage, "sweeps"))) if os.path.isdir(os.path.join(storage, "sweeps")) else []
    if len(names) != 1:
        raise SpecError(f"storage {storage!r} holds sweeps {names}: name one with --sweep NAME")
    return names[0]


def _check_cluster_storage(storage: str, address: str) -> None:
    """Every node of an existing cluster must write the store: probe it before anything is stored."""
    from cluster.storage_check import check_shared_storage

    check_shared_storage(storage, address=address)


def _absolute(storage: str) -> str:
    return storage if "://" in storage else os.path.abspath(storage)


def _checkpoint_root(storage: str) -> str:
    if "://" not in storage or storage.startswith("file://"):
        return os.path.join(storage.removeprefix("file://"), "checkpoints")
    return os.path.join(os.path.expanduser("~"), ".cache", "powersweep", "checkpoints")


def status(storage: str, *, sweep_id: str | None = None) -> dict:
    """Per-state counts of the planned budget results, per-cell (model, batch_size, tokens) progress, and the
    trunk evaluations (planned, stored, missing) counted apart."""
    spec = stored_spec(storage, sweep_id=sweep_id)
    table = ResultStore(storage).read(sweep_id=spec.name).table
    p = plan(spec)
    if p.searches:
        return _adaptive_status(spec.name, p, table)
    planned = {r for j in p.jobs for r in j.run_ids} | _trial_run_ids(p, table)
    done = table[table["run_id"].isin(planned)]
    counts = done["status"].value_counts().to_dict()
    counts["missing"] = max(p.runs - len(done), 0)
    cells = done.groupby(["model", "batch_size", "tokens"]).size().rename("runs_done").reset_index()
    lineages = {j.lineage_id for j in p.jobs} | set(done["lineage_id"])
    trunk_done = int((table["phase"].eq("trunk") & table["lineage_id"].isin(lineages)).sum())
    trunk = {"planned": p.trunk_rows, "done": trunk_done, "missing": max(p.trunk_rows - trunk_done, 0)}
    return {"sweep_id": spec.name, "planned": p.runs, "counts": counts, "cells": cells.to_dict("records"),
            "trunk": trunk}


def _adaptive_status(sweep_id: str, p: Plan, table) -> dict:
    """`status` of an adaptive sweep: the rows its searches have asked for so far (completed rounds and the
    one in progress) count as planned; per group, the rounds done and each budget's bracket."""
    from sweeps.rounds import adaptive_status

    searches = adaptive_status(p.searches, table)
    done = table[table["run_id"].isin(searches["run_ids"])]
    counts = done["status"].value_counts().to_dict()
    counts["missing"] = len(searches["run_ids"]) - len(done)
    cells = done.groupby(["model", "batch_size", "tokens"]).size().rename("runs_done").reset_index()
    trunk_done = int(table["run_id"].isin(searches["trunk_ids"]).sum())
    trunk = {"planned": len(searches["trunk_ids"]), "done": trunk_done,
             "missing": len(searches["trunk_ids"]) - trunk_done}
    return {"sweep_id": sweep_id, "planned": len(searches["run_ids"]), "counts": counts,
            "cells": cells.to_dict("records"), "trunk": trunk, "adaptive": searches["groups"]}


def _trial_run_ids(p: Plan, table) -> set[str]:
    """run_ids of the stored budget rows of an optuna sweep's trials (none for a grid)."""
    if not p.studies:
        return set()
    from sweeps.search import stored_run_ids

    return stored_run_ids(p.studies, table)
