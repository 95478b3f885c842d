"""The public sweep layer: submit a spec (or resume one) and ask for its status. Thin over plan, execute
and the store."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace

from sweeps.execute import ExecutionSettings, execute, missing_rows
from sweeps.lock import SweepLock, describe, holder
from sweeps.plan import Plan, plan
from sweeps.progress import ExecutionReport
from sweeps.spec import SpecError, SweepSpec, spec_from_dict
from sweeps.store import ResultStore, StoreError
from sweeps.trackers import check_loggers, prepare, tracking_root


@dataclass(frozen=True)
class SubmitResult:
    plan: Plan
    lineages_run: int  # lineages that still had missing budgets (trained in packs of run.pack)
    failed_trials: int
    storage: str
    execution: ExecutionReport | None  # where the wall time went (None for an Optuna search)
    set_aside: tuple[str, ...] = ()  # unreadable result files moved out of results/ before training ("old -> new")
    unreadable: tuple[str, ...] = ()  # planned rows the store still cannot read at the end, "run_id: why"
    replaced_lock: str | None = None  # the dead driver whose lock this one took over


def spec_path(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}/spec.json"


def submit(spec: SweepSpec, *, storage: str | None = None, address: str | None = None) -> SubmitResult:
    """Run what the store lacks of `spec`'s plan; the resolved spec is stored next to the results.

    The store decides what is done: a row counts only if its file reads; an unreadable file of a planned row is
    moved aside (kept, see `ResultStore.set_aside`) and its run trained again. One driver per sweep at a time
    (`SweepLock`). A store with nothing to do is only read, so a read-only finished store can be resumed.
    """
    storage = _absolute(storage or spec.storage)  # Ray trials run in their own working directories
    check_data(spec)
    check_loggers(spec.run.loggers)
    if address not in (None, "local"):
        _check_cluster_storage(storage, address)
    store, p = ResultStore(storage), plan(spec)
    if not p.studies and _complete(store, spec, p):
        return SubmitResult(plan=p, lineages_run=0, failed_trials=0, storage=storage, execution=None)
    with SweepLock(storage, spec.name) as lock:
        _store_spec(store, spec)
        set_aside = () if p.studies else tuple(store.set_aside(sweep_id=spec.name, names=p.row_ids))
        result = _run(spec, p, store, storage, address)
    return replace(result, set_aside=set_aside, unreadable=_unreadable(store, spec, p, result),
                   replaced_lock=lock.previous and describe(lock.previous))


def check_data(spec: SweepSpec) -> None:
    """The spec's data source and tokenizer must exist where the driver runs, before anything is stored or any
    trial starts (a missing file would otherwise fail inside every trial, retries included)."""
    data = spec.train.data
    if data.source != "embedded" and not glob.glob(os.path.expanduser(data.source), recursive=True):
        raise SpecError(f"train.data.source={data.source!r}: no such file, directory or glob match here: give an "
                        "existing text file, directory, glob or .bin token file, or 'embedded'")
    if data.tokenizer is not None and not os.path.isfile(os.path.expanduser(data.tokenizer)):
        raise SpecError(f"train.data.tokenizer={data.tokenizer!r}: no such file: give a tokenizer.json, or leave it "
                        "out for bytes")


def _run(spec: SweepSpec, p: Plan, store: ResultStore, storage: str, address: str | None) -> SubmitResult:
    stored = store.run_ids(sweep_id=spec.name)
    jobs = [j for j in (missing_rows(trial, stored) for trial in p.trials) if j is not None]
    settings = ExecutionSettings(
        store_uri=storage, sweep_id=spec.name, checkpoint_root=_checkpoint_root(storage),
        cpus_per_trial=spec.run.cpus_per_trial, gpus_per_trial=spec.run.gpus_per_trial,
        max_concurrent=spec.run.max_concurrent, max_retries=spec.run.max_retries, address=address,
        checkpoint_every_steps=spec.run.checkpoint_every_steps, driver=holder(),
        loggers=tuple(spec.run.loggers), tracking_root=tracking_root(storage),
    )
    prepare(settings.loggers, settings.tracking_root, spec.name)
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


def _complete(store: ResultStore, spec: SweepSpec, p: Plan) -> bool:
    """Whether the store already holds the spec as given and a readable row of every planned run."""
    try:
        same_spec = store.read_json(spec_path(spec.name)) == spec.to_dict()
    except StoreError:
        return False
    if not same_spec or not p.searches:
        return same_spec and p.row_ids <= store.run_ids(sweep_id=spec.name)
    from sweeps.rounds import searches_done  # adaptive: done when every group's search has ended on the store

    return searches_done(p.searches, store.read(sweep_id=spec.name).table)


def _store_spec(store: ResultStore, spec: SweepSpec) -> None:
    """Write the resolved spec next to the results, unless that very spec is there already."""
    try:
        if store.read_json(spec_path(spec.name)) == spec.to_dict():
            return
    except StoreError:
        pass  # none yet, or unreadable: write it
    store.write_json(spec_path(spec.name), spec.to_dict())


def _unreadable(store: ResultStore, spec: SweepSpec, p: Plan, result: SubmitResult) -> tuple[str, ...]:
    """Planned rows the store cannot read after the run, each with why ("run_id: reason")."""
    if p.studies:
        return ()
    read = store.read(sweep_id=spec.name)
    missing = sorted(p.row_ids - set(read.table["run_id"]))
    why = (f"{result.failed_trials} trials failed: see their errors above" if result.failed_trials else
           "no trial wrote it")
    corrupt = {report.split(": ", 1)[0].rsplit("/", 1)[-1].removesuffix(".parquet"): report
               for report in read.corrupt_files}
    return tuple(f"{r}: {corrupt.get(r, why)}" for r in missing)


def resume(storage: str, *, sweep_id: str | None = None, address: str | None = None) -> SubmitResult:
    """Submit the stored spec again: only the runs the store lacks are trained."""
    return submit(stored_spec(storage, sweep_id=sweep_id), storage=storage, address=address)


def stored_spec(storage: str, *, sweep_id: str | None = None) -> SweepSpec:
    sweep_id = sweep_id or _only_sweep(storage)
    store = ResultStore(storage)
    try:
        values = store.read_json(spec_path(sweep_id))
    except StoreError as error:
        if "no such file" in str(error):
            raise SpecError(f"no sweep {sweep_id!r} in {storage!r}: submit a spec there first") from None
        raise SpecError(f"sweep {sweep_id!r} in {storage!r}: its stored spec {spec_path(sweep_id)} cannot be read "
                        "(not valid JSON): submit the sweep's YAML again with --storage, which rewrites it") from None
    try:
        return spec_from_dict(values if isinstance(values, dict) else {})
    except SpecError as error:
        raise SpecError(f"sweep {sweep_id!r} in {storage!r}: its stored spec {spec_path(sweep_id)} is not a valid "
                        f"spec ({error}): submit the sweep's YAML again with --storage") from None


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
    """Per-state counts of the planned budget results, per-cell (model, batch_size, tokens) progress, the
    trunk evaluations (planned, stored, missing) counted apart, the files in the sweep's results that cannot
    be read ("<URI>: <reason>"; their rows count as missing) and those moved aside by an earlier resume."""
    spec = stored_spec(storage, sweep_id=sweep_id)
    store = ResultStore(storage)
    read = store.read(sweep_id=spec.name)
    table = read.table
    p = plan(spec)
    files = {"unreadable_files": read.corrupt_files, "set_aside_files": store.set_aside_files(sweep_id=spec.name)}
    if p.searches:
        return {**_adaptive_status(spec.name, p, table), **files}
    planned = {r for j in p.jobs for r in j.run_ids} | _trial_run_ids(p, table)
    done = table[table["run_id"].isin(planned)]
    counts = done["status"].value_counts().to_dict()
    counts["missing"] = max(p.runs - len(done), 0)
    cells = done.groupby(["model", "batch_size", "tokens"]).size().rename("runs_done").reset_index()
    lineages = {j.lineage_id for j in p.jobs} | set(done["lineage_id"])
    trunk_done = int((table["phase"].eq("trunk") & table["lineage_id"].isin(lineages)).sum())
    trunk = {"planned": p.trunk_rows, "done": trunk_done, "missing": max(p.trunk_rows - trunk_done, 0)}
    return {"sweep_id": spec.name, "planned": p.runs, "counts": counts, "cells": cells.to_dict("records"),
            "trunk": trunk, **files}


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
