"""What `submit` checks before it writes anything: each refusal is one line (SpecError or StoreError) naming
the field or path, the value and the fix, and leaves the store as it was.

- the data: `sweeps/data_check.py` (`plan` checks it too, so it lives apart from this module's heavier
  imports);
- the store: each directory the sweep writes takes a file (a probe, removed again);
- the disk: free space for the sweep's rows, curves and lineage checkpoints, estimated from the plan;
- memory: a CPU trial's estimated peak fits the memory of a node (GPU trials are sized against the GPU by
  the plan; see `sweeps.trials.gpu_share`).
"""

from __future__ import annotations

import os
import shutil
import uuid

from powersweep.proxy_models.budgets import trunk_tokens
from powersweep.proxy_models.memory import step_memory, trunk_copy_bytes
from powersweep.proxy_models.train_config import TrainConfig
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.plan import Plan
from powersweep.sweeps.spec import SpecError
from powersweep.sweeps.storage import write_failure
from powersweep.sweeps.store import StoreError
from powersweep.sweeps.trials import PackedJob

# Bytes on disk, measured on stored sweeps (cpu-quick): a result file is 10-13 KB, a lineage's curve 20-60 KB.
ROW_FILE_BYTES = 16 * 2**10
CURVE_FILE_BYTES = 96 * 2**10
TUNE_STATE_BYTES = 256 * 2**10  # Ray Tune's experiment state, per trial (the sweep's checkpoints/ray/)
SPACE_MARGIN_BYTES = 2**20  # logs, the spec, a curve's temporary copy while it is replaced
PROCESS_BYTES = 600 * 2**20  # a trial process before its model: Python, torch and Ray's worker (RSS measured)


def check_writable(paths: list[str]) -> None:
    """Each local directory in `paths` (or, where it does not exist yet, its nearest existing parent) must
    take a new file: a probe file is created and removed. StoreError naming the directory, why and the fix."""
    for path in paths:
        directory = _existing(path)
        probe = os.path.join(directory, f".powersweep-probe-{uuid.uuid4().hex}")
        try:
            with open(probe, "wb"):
                pass
            os.remove(probe)
        except OSError as error:
            where = "" if directory == path else f" in {directory}, the nearest folder that exists,"
            raise StoreError(
                f"{path}: cannot write{where} before the sweep starts: {write_failure(error)}"
            ) from None


def check_free_space(p: Plan, *, directory: str, stored_rows: int = 0) -> None:
    """The filesystem of `directory` must have room for what the plan writes there (`sweep_bytes`), less the
    rows already stored. StoreError with both numbers and the fix."""
    need = sweep_bytes(p) - stored_rows * ROW_FILE_BYTES
    free = shutil.disk_usage(_existing(directory)).free
    if need > free:
        raise StoreError(
            f"storage {directory!r}: the sweep needs about {_mib(need)} for its rows, curves and "
            f"checkpoints and its filesystem has {_mib(free)} free: free space there, or give another "
            "--storage"
        )


def sweep_bytes(p: Plan) -> int:
    """Estimated bytes a sweep writes beside its store: a file per row, a curve per lineage, and per trial two
    trunk checkpoints (the file and its replacement while it is written) and Tune's state."""
    trials = _trials(p)
    rows = sum(n * len(job.row_ids) for job, n in p.mode.lineages())
    checkpoints = sum(2 * trunk_copy_bytes(t.config.proxy, variants=_variants(t)) for t in trials)
    return (
        rows * ROW_FILE_BYTES
        + p.lineages * CURVE_FILE_BYTES
        + checkpoints
        + len(trials) * TUNE_STATE_BYTES
        + SPACE_MARGIN_BYTES
    )


def check_host_memory(p: Plan, *, node_bytes: float, where: str) -> None:
    """A CPU trial's estimated peak (`host_bytes`) must fit a node of `node_bytes` (`where` names it)."""
    need, trial = max(((host_bytes(t), t) for t in _trials(p)), key=lambda pair: pair[0], default=(0, None))
    if trial is not None and need > node_bytes:
        raise SpecError(
            f"model {trial.config.model!r} at batch_size {trial.config.batch_size} needs about "
            f"{_mib(need)} of host memory per trial and {where} has {_mib(node_bytes)}: train a smaller "
            "model (train.model_overrides) or batch_size, or run on a larger node"
        )


def host_bytes(trial: LineageJob | PackedJob) -> int:
    """Estimated peak bytes of a trial training on the CPU: its step at the whole batch (fp32, the chunked
    head), the trunk copy its lineage keeps while a branch decays, and the process itself."""
    config: TrainConfig = trial.config
    width = 8 if config.dtype == "float64" else 4
    step = step_memory(
        config.proxy,
        micro_batch_size=config.batch_size,
        compute_bytes=width,
        param_bytes=width,
        head="chunked",
        variants=_variants(trial),
    ).peak
    trunk = trunk_copy_bytes(config.proxy, variants=_variants(trial), param_bytes=width)
    return step + (trunk if trunk_tokens(config, trial.budgets) else 0) + PROCESS_BYTES


def _trials(p: Plan) -> list[LineageJob | PackedJob]:
    """The plan's trials, each study's template standing for its trials
    and each adaptive search's first round."""
    return p.sized_trials


def _variants(trial: LineageJob | PackedJob) -> int:
    return len(trial.members) if isinstance(trial, PackedJob) else 1


def _existing(path: str) -> str:
    """`path`, or its nearest existing parent."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _mib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
