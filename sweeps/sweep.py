"""The public sweep layer: submit a spec (or resume one) and ask for its status. Thin over plan, execute
and the store."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import psutil

from powersweep.sweeps.curve_store import curve_status
from powersweep.sweeps.data_check import check_data
from powersweep.sweeps.identity import differences
from powersweep.sweeps.lock import SweepLock, describe, holder
from powersweep.sweeps.outcome import counted
from powersweep.sweeps.plan import Plan, plan, spec_gpu_bytes
from powersweep.sweeps.preflight import check_free_space, check_host_memory, check_writable
from powersweep.sweeps.progress import ExecutionReport
from powersweep.sweeps.spec import SpecError, SweepSpec, spec_from_dict
from powersweep.sweeps.store import ResultStore, Stock, StoreError
from powersweep.sweeps.trackers import check_loggers, prepare, tracking_root

if TYPE_CHECKING:
    import pandas as pd

    from powersweep.sweeps.execute import ExecutionSettings  # execution: status and compact need none

# Checks that every node of a cluster at `address` can write the store at a URI and reads the corpus of a
# DataConfig as the driver does, e.g. `cluster.nodes.check_nodes`; raises a user error if not.
NodeCheck = Callable[..., object]


@dataclass(frozen=True)
class SubmitResult:
    plan: Plan
    lineages_run: int  # lineages that still had missing budgets (trained in packs of run.pack)
    failed_trials: int
    storage: str
    execution: ExecutionReport | None  # where the wall time went (None for an Optuna search)
    # unreadable result files moved out of results/ before training ("old -> new")
    set_aside: tuple[str, ...] = ()
    unreadable: tuple[str, ...] = ()  # planned rows the store still cannot read at the end, "run_id: why"
    replaced_lock: str | None = None  # the dead driver whose lock this one took over
    replaced: str | None = None  # with --replace: where the sweep's earlier rows, curves and spec were moved


def spec_path(sweep_id: str) -> str:
    return f"sweeps/{sweep_id}/spec.json"


def submit(
    spec: SweepSpec,
    *,
    storage: str | None = None,
    address: str | None = None,
    check_nodes: NodeCheck | None = None,
    replace_sweep: bool = False,
    checkpoints: str | None = None,
) -> SubmitResult:
    """Run what the store lacks of `spec`'s plan; the resolved spec is stored next to the results.

    A sweep's identity is its settings (`sweeps.identity`): a spec whose settings differ from the stored
    sweep's of the same name is refused (SpecError naming the fields), unless `replace_sweep`, which moves the
    stored rows, curves and spec aside (kept, named by `status`) and starts the sweep afresh; grids may
    change. Everything that can be checked before a trial runs is (`sweeps.preflight`, Ray's resources and
    each CPU trial's memory): a refusal writes nothing. The store decides what is done: a row counts only if
    its file reads; an unreadable row or curve file of the sweep is moved aside (kept, see
    `ResultStore.set_aside`) and its run trained again. One driver per sweep at a time (`SweepLock`). A store
    with nothing to do is only read, so a read-only finished store can be resumed.
    On an existing cluster (`address` neither None nor "local"), `check_nodes(storage, data, address=address)`
    runs before anything is stored, e.g. `cluster.nodes.check_nodes`: every node must see the store and read
    the corpus (`data`, the spec's DataConfig) as the driver does. `checkpoints`: the directory of the
    lineage checkpoints, Ray's trial files and logs (default: `<storage>/checkpoints` on a local store), so
    the store itself can hold only results, curves and the spec (e.g. a directory copied off the machine).
    """
    submitted_at = time.time()  # the start-up breakdown counts from here (sweeps/progress.py)
    storage = _absolute(storage or spec.storage)  # Ray trials run in their own working directories
    spec, fingerprint, data_notes = check_data(spec)  # vocab_size: auto set: ids and the stored spec hold it
    check_loggers(spec.run.loggers)
    if address not in (None, "local") and check_nodes is not None:
        check_nodes(storage, spec.data_config, address=address)
    store, p = ResultStore(storage), plan(spec, gpu_bytes=gpu_memory(spec))
    p = replace(p, notes=p.notes + data_notes + check_gpu_shares(spec, p))  # may refuse: nothing stored yet
    _check_settings(store, spec, replace_sweep=replace_sweep)
    # the sweep's stored rows, read once for the checks before its lock (a sweep to be replaced holds none)
    stored = None if replace_sweep else store.read(sweep_id=spec.name, columns=["data_fingerprint"]).table
    if stored is not None:
        _check_corpus(stored, spec, fingerprint)
        if _complete(store, spec, p, stored_ids=set(stored["run_id"])):
            return SubmitResult(plan=p, lineages_run=0, failed_trials=0, storage=storage, execution=None)
    settings = _settings(spec, p, storage, address, checkpoints=checkpoints)
    ray_at = _check_before_writing(store, p, settings, stored_rows=0 if stored is None else len(stored))
    settings = replace(settings, startup_marks=(submitted_at, *ray_at))
    with SweepLock(storage, spec.name) as lock:
        replaced = _replace(store, settings) if replace_sweep else None
        _store_spec(store, spec)
        stock = store.take_stock(sweep_id=spec.name, names=_planned_rows(p, store, settings))
        result = _run(spec, p, store, settings, stock)
    return replace(
        result,
        set_aside=stock.set_aside,
        unreadable=_unreadable(store, p, result, settings),
        replaced_lock=lock.previous and describe(lock.previous),
        replaced=replaced,
    )


def _check_corpus(rows: pd.DataFrame, spec: SweepSpec, fingerprint: str) -> None:
    """SpecError when the sweep's stored `rows` were trained on other data than `train.data` makes now (their
    `data_fingerprint`): the same source, other tokens (re-tokenized, re-sharded, edited). Its rows and the
    new ones would be fitted as if they saw one corpus."""
    stored = rows["data_fingerprint"]
    other = stored[stored.notna() & stored.ne("") & stored.ne(fingerprint)]
    if len(other):
        seen = sorted(set(other))
        raise SpecError(
            f"sweep {spec.name!r} holds {len(other)} rows trained on other data than train.data holds now "
            f"(data_fingerprint {', '.join(seen[:2])}{', ...' if len(seen) > 2 else ''}, now {fingerprint}): "
            "resume on the data those rows saw, or start afresh with --replace (their rows are kept aside) "
            "or under another sweep name"
        )


def _check_settings(store: ResultStore, spec: SweepSpec, *, replace_sweep: bool) -> None:
    """SpecError when the store holds a sweep of this name whose settings differ from `spec`'s (unless it is
    to be replaced): its rows and the new ones would be mixed as if they were one sweep's."""
    try:
        stored = stored_spec(store.uri, sweep_id=spec.name)
    except SpecError:
        return  # no sweep of this name yet, or a spec unreadable: the submitted one is stored
    changed = differences(stored, spec)
    if changed and not replace_sweep:
        raise SpecError(
            f"sweep {spec.name!r} in {store.uri!r} holds runs of other settings, which would mix with "
            f"these ({'; '.join(changed[:3])}{' ...' if len(changed) > 3 else ''}): give the spec a new "
            "name, or submit with --replace to move the stored runs aside (kept)"
        )


def _check_before_writing(
    store: ResultStore, p: Plan, settings: ExecutionSettings, *, stored_rows: int
) -> tuple[float, float]:
    """What would refuse the sweep later, checked before the lock, the spec or a row is written: no other
    driver, a CPU trial's memory, the store's room and directories, then Ray's resources (Ray starts here).
    Returns when Ray's start began and ended (wall clock)."""
    SweepLock(store.uri, settings.sweep_id).check()
    local_ray = settings.address in (None, "local")
    if local_ray and not settings.uses_gpu:
        check_host_memory(
            p, node_bytes=psutil.virtual_memory().available, where="this machine (available now)"
        )
    _check_room(store, p, settings, stored_rows=stored_rows)
    ray_start = time.time()
    _start_ray(settings, p, check_memory=not local_ray)
    return ray_start, time.time()


def _check_room(store: ResultStore, p: Plan, settings: ExecutionSettings, *, stored_rows: int) -> None:
    """On a local store: every directory the sweep writes takes a file, and the disk has room for the plan."""
    local = store.local_dir
    if local is None:
        return
    sweep = settings.sweep_id
    check_writable(
        [
            os.path.join(local, "results", f"sweep_id={sweep}"),
            os.path.join(local, "curves", f"sweep_id={sweep}"),
            os.path.join(local, "sweeps", sweep),
            os.path.join(local, "set-aside"),
            os.path.join(settings.checkpoint_root, sweep),
        ]
    )
    check_free_space(p, directory=local, stored_rows=stored_rows)


def _start_ray(settings: ExecutionSettings, p: Plan, *, check_memory: bool) -> None:
    """Start (or join) Ray and check, before anything is written, that a trial's CPUs and GPUs fit a node and
    (`check_memory`, on a cluster) that a CPU trial's estimated memory fits the largest node's."""
    import ray

    from powersweep.sweeps.execute import check_resources, init_ray

    init_ray(settings)
    check_resources(settings)
    if check_memory and not settings.uses_gpu:
        memory = max(
            (node["Resources"].get("memory", 0.0) for node in ray.nodes() if node.get("Alive")), default=0.0
        )
        check_host_memory(p, node_bytes=memory, where="the largest node of the cluster")


def _replace(store: ResultStore, settings: ExecutionSettings) -> str | None:
    """Set the stored sweep aside for --replace; its lineage checkpoints (caches of its runs) are deleted."""
    shutil.rmtree(os.path.join(settings.checkpoint_root, settings.sweep_id), ignore_errors=True)
    return store.replace_sweep(sweep_id=settings.sweep_id)


def gpu_memory(spec: SweepSpec) -> int | None:
    """Bytes of one GPU for the plan: None when the trials ask for no GPU (they run on the CPU, so nothing is
    sized by GPU memory), else run.gpu_memory, else the first local GPU's (None without one)."""
    if not spec.run.uses_gpu or spec.run.gpu_memory:
        return spec_gpu_bytes(spec)
    import torch

    return torch.cuda.get_device_properties(0).total_memory if torch.cuda.is_available() else None


def _requested_gpus(spec: SweepSpec) -> float:
    """run.gpus_per_trial as a floor on each trial's GPU share ('auto': none, the estimate decides)."""
    return 0.0 if spec.run.gpus_per_trial == "auto" else spec.run.gpus_per_trial


def check_gpu_shares(spec: SweepSpec, p: Plan) -> tuple[str, ...]:
    """The notes on trials whose requested GPU share was too small for their memory estimate (the share is
    raised). SpecError when gpus_per_trial is 'auto' with no GPU memory known, or a trial fits no GPU."""
    from powersweep.proxy_models.shapes import ConfigError
    from powersweep.sweeps.trials import gpu_share

    if not spec.run.uses_gpu:
        return ()
    if p.gpu_bytes is None:
        if spec.run.gpus_per_trial == "auto":
            raise SpecError(
                "run.gpus_per_trial=auto needs the GPU's memory: set run.gpu_memory (e.g. 80GiB) or "
                "run where a GPU is visible"
            )
        return ()
    try:
        notes = {
            gpu_share(t, gpu_bytes=p.gpu_bytes, requested=_requested_gpus(spec))[1] for t in p.sized_trials
        }
    except ConfigError as error:
        raise SpecError(f"run.gpu_memory={p.gpu_bytes / 2**30:.1f}GiB: {error}") from None
    return tuple(sorted(n for n in notes if n))


def _settings(
    spec: SweepSpec, p: Plan, storage: str, address: str | None, *, checkpoints: str | None = None
) -> ExecutionSettings:
    from powersweep.sweeps.execute import ExecutionSettings

    return ExecutionSettings(
        store_uri=storage,
        sweep_id=spec.name,
        checkpoint_root=_absolute(checkpoints) if checkpoints else _checkpoint_root(storage),
        run=spec.run,
        gpus_per_trial=_requested_gpus(spec),
        address=address,
        driver=holder(),
        gpu_memory_bytes=p.gpu_bytes if spec.run.uses_gpu else None,
        tracking_root=tracking_root(storage),
    )


def _planned_rows(p: Plan, store: ResultStore, settings: ExecutionSettings) -> set[str]:
    """The rows the sweep writes, as far as its mode knows them before it runs."""
    return p.mode.planned_rows(p, store, settings)


def _run(
    spec: SweepSpec, p: Plan, store: ResultStore, settings: ExecutionSettings, stock: Stock
) -> SubmitResult:
    prepare(settings.run.loggers, settings.tracking_root, spec.name)
    ran = p.mode.run(p, store, settings, stock)
    return SubmitResult(
        plan=p,
        lineages_run=ran.lineages_run,
        failed_trials=ran.failed_trials,
        storage=settings.store_uri,
        execution=ran.execution,
    )


def _complete(store: ResultStore, spec: SweepSpec, p: Plan, *, stored_ids: set[str]) -> bool:
    """Whether the store already holds the spec as given and every row of the sweep, readable (`stored_ids`:
    the run ids it holds)."""
    try:
        same_spec = store.read_json(spec_path(spec.name)) == spec.to_dict()
    except StoreError:
        return False
    return same_spec and p.mode.complete(p, store, stored_ids)


def _store_spec(store: ResultStore, spec: SweepSpec) -> None:
    """Write the resolved spec next to the results, unless that very spec is there already."""
    try:
        if store.read_json(spec_path(spec.name)) == spec.to_dict():
            return
    except StoreError:
        pass  # none yet, or unreadable: write it
    store.write_json(spec_path(spec.name), spec.to_dict())


def _unreadable(
    store: ResultStore, p: Plan, result: SubmitResult, settings: ExecutionSettings
) -> tuple[str, ...]:
    """Planned rows the store cannot read after the run, each with why ("run_id: reason")."""
    read = store.read(sweep_id=settings.sweep_id, columns=["run_id"])
    missing = sorted(set(_planned_rows(p, store, settings)) - set(read.table["run_id"]))
    why = (
        f"{counted(result.failed_trials, 'trial')} failed: see the errors above"
        if result.failed_trials
        else "no trial wrote it"
    )
    corrupt = {_file_name(report): report for report in read.corrupt_files}
    return tuple(f"{r}: {corrupt.get(r, why)}" for r in missing)


def resume(
    storage: str,
    *,
    sweep_id: str | None = None,
    address: str | None = None,
    check_nodes: NodeCheck | None = None,
) -> SubmitResult:
    """Submit the stored spec again: only the runs the store lacks are trained."""
    return submit(
        stored_spec(storage, sweep_id=sweep_id), storage=storage, address=address, check_nodes=check_nodes
    )


def stored_spec(storage: str, *, sweep_id: str | None = None) -> SweepSpec:
    sweep_id = sweep_id or _only_sweep(storage)
    store = ResultStore(storage)
    try:
        values = store.read_json(spec_path(sweep_id))
    except StoreError as error:
        if "no such file" in str(error):
            raise SpecError(f"no sweep {sweep_id!r} in {storage!r}: submit a spec there first") from None
        raise SpecError(
            f"sweep {sweep_id!r} in {storage!r}: its stored spec {spec_path(sweep_id)} cannot be read "
            "(not valid JSON): submit the sweep's YAML again with --storage, which rewrites it"
        ) from None
    try:
        return spec_from_dict(values if isinstance(values, dict) else {})
    except SpecError as error:
        raise SpecError(
            f"sweep {sweep_id!r} in {storage!r}: its stored spec {spec_path(sweep_id)} is not a valid "
            f"spec ({error}): submit the sweep's YAML again with --storage"
        ) from None


def stored_sweeps(storage: str) -> list[str]:
    """The names of the sweeps stored at ``storage`` (each has its spec there), sorted."""
    return ResultStore(storage).sweep_ids()


def _only_sweep(storage: str) -> str:
    names = stored_sweeps(storage)
    if not names:
        local = "://" not in storage
        where = (
            "does not exist"
            if local and not os.path.exists(storage)
            else "holds no sweep (no sweeps/<name>/spec.json)"
        )
        raise SpecError(
            f"storage {storage!r} {where}: give the directory a sweep was submitted to (its --storage, "
            "else runs/<name>)"
        )
    if len(names) != 1:
        raise SpecError(f"storage {storage!r} holds sweeps {names}: name one with --sweep NAME")
    return names[0]


def _absolute(storage: str) -> str:
    return storage if "://" in storage else os.path.abspath(storage)


def _checkpoint_root(storage: str) -> str:
    if "://" not in storage or storage.startswith("file://"):
        return os.path.join(storage.removeprefix("file://"), "checkpoints")
    return os.path.join(os.path.expanduser("~"), ".cache", "powersweep", "checkpoints")


def status(storage: str, *, sweep_id: str | None = None) -> dict:
    """Per-state counts of the planned budget results, per-cell (model, batch_size, tokens) progress, the
    trunk evaluations (planned, stored, missing) counted apart, the files in the sweep's results that cannot
    be read ("<URI>: <reason>"; their rows count as missing), those moved aside by an earlier resume, and how
    many lineages have a readable stored curve (``curves``: lineages, stored; an unreadable curve file is
    named with the unreadable files), and the earlier versions of the sweep that --replace set aside."""
    spec = stored_spec(storage, sweep_id=sweep_id)
    store = ResultStore(storage)
    p = plan(spec)
    read = store.read(sweep_id=spec.name, columns=p.mode.status_columns)
    table = read.table
    curves, broken_curves = store.curve_inventory(sweep_id=spec.name)
    set_aside, replaced = store.set_aside_inventory(sweep_id=spec.name)
    files = {
        "unreadable_files": read.corrupt_files + broken_curves,
        "set_aside_files": set_aside,
        "replaced": replaced,
    }
    curves -= {_file_name(report) for report in broken_curves}  # a newer copy than a compacted one, lost
    progress = p.mode.status(p, table)
    lineages = progress.pop("lineages")
    return {**progress, **files, "curves": curve_status(curves, lineages, on=spec.run.curves)}


def _file_name(report: str) -> str:
    """'<URI>/<name>.parquet: <reason>' -> '<name>'."""
    return report.split(": ", 1)[0].rsplit("/", 1)[-1].removesuffix(".parquet")
