"""Trials: the lineages a Ray trial trains, packed (`run.pack`) and sized for a GPU.

`pack_jobs` groups lineages that differ only in their schedule's searched values and seed into packed trials
trained in lockstep, without touching any id. On a GPU of known size a trial's share of it (`gpu_share`) and
the micro-batch of its steps (`trial_memory`) follow from the memory estimate (proxy_models/memory.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from powersweep.proxy_models.memory import (
    CUDA_CONTEXT_BYTES,
    GIB,
    USABLE_FRACTION,
    MicroBatchChoice,
    choose_micro_batch,
    device_budget,
    step_memory,
    trunk_copy_bytes,
)
from powersweep.proxy_models.train_config import TrainConfig
from powersweep.sweeps.lineages import SEARCHED, LineageJob, plain, short_hash
from powersweep.sweeps.spec import SweepSpec


@dataclass(frozen=True)
class PackedJob:
    """One Ray trial: lineages that differ only in their schedule's searched values and seed, trained in
    lockstep. Each member keeps its own ids; one member trains as a plain lineage."""

    members: tuple[LineageJob, ...]

    @property
    def config(self) -> TrainConfig:
        """The shared config (members[0]'s schedule and seed), trained to the largest budget of any member."""
        return replace(self.members[0].config, tokens=max(self.budgets))

    @property
    def budgets(self) -> tuple[float, ...]:
        """The union of the members' budgets, ascending."""
        return tuple(sorted({t for m in self.members for t in m.budgets}))

    @property
    def trunk_tokens(self) -> tuple[int, ...]:
        return tuple(sorted({t for m in self.members for t in m.trunk_tokens}))


def pack_jobs(
    jobs: Sequence[LineageJob], pack: int | str, *, gpu_bytes: int | None = None
) -> tuple[PackedJob, ...]:
    """Groups of at most `pack` lineages, in plan order, that share everything but the schedule's searched
    values (lr; power a, b, lr_max) and the seed: model, batch size, budgets and train settings. Ids stay per
    member, so they do not depend on `pack`. `pack` 'auto' packs each group by `auto_pack` on a GPU of
    `gpu_bytes`."""
    groups: dict[str, list[LineageJob]] = {}
    for job in jobs:
        groups.setdefault(_pack_key(job), []).append(job)
    trials = []
    for g in groups.values():
        size = auto_pack(g[0].config, gpu_bytes=gpu_bytes, candidates=len(g)) if pack == "auto" else pack
        trials.extend(PackedJob(tuple(g[i : i + size])) for i in range(0, len(g), size))
    return tuple(trials)


MAX_PACK = 16  # pack: auto packs at most this many variants in one trial


def auto_pack(config: TrainConfig, *, gpu_bytes: int | None, candidates: int = MAX_PACK) -> int:
    """`pack: auto`: the most variants (at most `candidates` and MAX_PACK) whose step at the whole batch,
    beside their trunk copy, fits a GPU of `gpu_bytes` by the memory estimate (bf16, the config's head); 1
    when no GPU memory is known or none fit. More variants per trial beat more trials per GPU: one process,
    one CUDA context, larger kernels."""
    if gpu_bytes is None:
        return 1
    budget = device_budget(gpu_bytes)
    for k in range(min(candidates, MAX_PACK), 1, -1):
        step = step_memory(config.proxy, micro_batch_size=config.batch_size, head=config.head, variants=k)
        if step.peak + trunk_copy_bytes(config.proxy, variants=k) <= budget:
            return k
    return 1


def trial_memory(trial: LineageJob | PackedJob, *, gpu_bytes: int) -> MicroBatchChoice:
    """The micro-batch a trial's step takes on a whole GPU of `gpu_bytes` (all its variants together) beside
    the trunk copy its lineage holds while a branch decays (`trial_trunk_copy`), and the step's estimated
    memory. Raises ConfigError when not even one sequence fits."""
    config = trial.config
    return choose_micro_batch(
        config.proxy,
        batch_size=config.batch_size,
        budget_bytes=device_budget(gpu_bytes) - trial_trunk_copy(trial),
        head=config.head,
        variants=members_count(trial),
    )


def trial_trunk_copy(trial: LineageJob | PackedJob) -> int:
    """Bytes of the trunk state the trial's lineage keeps on the device while a branch decays."""
    return trunk_copy_bytes(trial.config.proxy, variants=members_count(trial))


def gpu_share(
    trial: LineageJob | PackedJob, *, gpu_bytes: int, requested: float = 0.0
) -> tuple[float, str | None]:
    """(GPUs the trial asks Ray for, a note when `requested` was raised). The share is the trial's estimated
    bytes (its step, its trunk copy and a CUDA context) over what a GPU of `gpu_bytes` offers, rounded up to
    1/100: Ray never places more trials on a GPU than their estimates fit. A `requested` share at least that
    large is kept."""
    need = CUDA_CONTEXT_BYTES + trial_memory(trial, gpu_bytes=gpu_bytes).memory.peak + trial_trunk_copy(trial)
    share = min(1.0, math.ceil(need / (gpu_bytes * USABLE_FRACTION) * 100) / 100)
    if requested >= share:
        return requested, None
    config = trial.config
    note = (
        None
        if not requested
        else (
            f"run.gpus_per_trial={requested:g} is too small for {config.model} batch {config.batch_size} "
            f"x {members_count(trial)} variants: its step needs about {need / GIB:.1f} GiB of the "
            f"{gpu_bytes / GIB:.1f} GiB GPU, so it asks for {share:g} GPU"
        )
    )
    return share, note


def trial_budget_gib(trial: LineageJob | PackedJob, share: float, *, gpu_bytes: int) -> float:
    """The memory budget (GiB) a trial's steps plan for within its share of a GPU: the share of what a GPU
    offers, less its own CUDA context and its trunk copy."""
    return max(share * gpu_bytes * USABLE_FRACTION - CUDA_CONTEXT_BYTES - trial_trunk_copy(trial), 0) / GIB


def members_count(trial: LineageJob | PackedJob) -> int:
    return len(trial.members) if isinstance(trial, PackedJob) else 1


def trial_name(jobs: Sequence[LineageJob | PackedJob]) -> str:
    """What a trial trains, as Ray Tune's trial name and folder: its first job's model, batch size, searched
    values (each variant's, for a pack), seeds and lineage id, and how many more jobs it runs, e.g.
    `cpu-xs_bs4_lr0.004+0.016_s0_3fa9c2d1` or `cpu-xs_bs4_lr0.004_s0_3fa9c2d1_+2jobs`."""
    members = jobs[0].members if isinstance(jobs[0], PackedJob) else (jobs[0],)
    config = members[0].config
    searched = "+".join(dict.fromkeys(_searched(m.config.schedule) for m in members))
    seeds = "+".join(dict.fromkeys(str(m.config.seed) for m in members))
    more = f"_+{len(jobs) - 1}jobs" if len(jobs) > 1 else ""
    name = f"{config.model}_bs{config.batch_size}_{searched}_s{seeds}_{members[0].lineage_id[:8]}{more}"
    return re.sub(r"[^A-Za-z0-9_.+-]", "-", name)


def _searched(schedule) -> str:
    if schedule.name == "power":
        return f"a{schedule.power_a:g}_b{schedule.power_b:g}_max{schedule.lr_max:g}"
    return f"lr{schedule.lr:g}"


def _pack_key(job: LineageJob) -> str:
    config = plain(job.config)
    config["schedule"] = {k: v for k, v in config["schedule"].items() if k not in SEARCHED}
    del config["seed"]  # a packed variant trains on its own seed's weights and batches
    return short_hash([config, job.budgets])


def pack_auto_note(spec: SweepSpec, gpu_bytes: int | None) -> str:
    if gpu_bytes:
        return f"pack auto: as many variants per trial as fit {gpu_bytes / GIB:.1f} GiB of GPU memory"
    if not spec.run.uses_gpu:
        return "pack auto: trials run on the CPU (run.gpus_per_trial: 0): one variant per trial"
    return "pack auto: no GPU memory known (run.gpu_memory): one variant per trial"
