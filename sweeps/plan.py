"""Planning: a validated spec expands into lineages (Ray trials) through its sweep mode, and their cost.

`plan(spec)` asks the mode of `search.mode` (`MODES`: grid, optuna, adaptive; sweeps/mode.py) for its
lineages; every mode makes them with the ids of sweeps/lineages.py, and `run.pack` groups them into trials
(sweeps/trials.py) without touching any id. `format_plan` and `memory_table` say what a plan costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from powersweep.proxy_models.budgets import independent_tokens, planned_tokens
from powersweep.proxy_models.memory import GIB, device_budget, parse_bytes
from powersweep.proxy_models.settings import AUTO_VOCAB
from powersweep.sweeps.adaptive_mode import AdaptiveMode
from powersweep.sweeps.grid_mode import GridMode
from powersweep.sweeps.lineages import LineageJob
from powersweep.sweeps.mode import SweepMode
from powersweep.sweeps.optuna_mode import OptunaMode
from powersweep.sweeps.outcome import counted
from powersweep.sweeps.spec import SpecError, SweepSpec
from powersweep.sweeps.trials import (
    PackedJob,
    gpu_share,
    members_count,
    pack_jobs,
    trial_memory,
    trial_trunk_copy,
)

MODES: dict[str, type[SweepMode]] = {m.name: m for m in (GridMode, OptunaMode, AdaptiveMode)}


@dataclass(frozen=True)
class Plan:
    """A sweep's lineages, as its mode plans them, and their token cost."""

    sweep_id: str
    mode: SweepMode
    notes: tuple[str, ...] = field(default=())
    pack: int | str = 1  # lineages per trial (run.pack); 'auto': from the memory estimate and gpu_bytes
    gpu_bytes: int | None = None  # memory of one GPU (run.gpu_memory, plan --gpu-memory); None: unknown

    @property
    def jobs(self) -> tuple[LineageJob, ...]:
        """The lineages known before the sweep runs (an adaptive search's first round; none for Optuna)."""
        return self.mode.jobs

    @property
    def runs(self) -> int:
        return sum(n * len(j.budgets) for j, n in self.mode.lineages())

    @property
    def lineages(self) -> int:
        return sum(n for _, n in self.mode.lineages())

    @property
    def trunk_rows(self) -> int:
        """Trunk evaluations the plan writes (an optuna study's n_trials lineages each write theirs)."""
        return sum(n * len(j.trunk_run_ids) for j, n in self.mode.lineages())

    @property
    def row_ids(self) -> frozenset[str]:
        """Every row of the lineages known before the sweep runs: budget results and trunk evaluations."""
        return frozenset(r for j in self.jobs for r in j.row_ids)

    @property
    def trials(self) -> tuple[PackedJob, ...]:
        """The Ray trials: lineages grouped by `pack_jobs`."""
        return pack_jobs(self.jobs, self.pack, gpu_bytes=self.gpu_bytes)

    @property
    def sized_trials(self) -> list[LineageJob | PackedJob]:
        """Every trial whose memory is checked before the sweep runs: the planned trials and the lineages
        standing for trials a search chooses later."""
        return [*self.trials, *self.mode.sized()]

    @property
    def tokens_independent(self) -> int:
        """Tokens if every (run, budget) trained on its own."""
        return sum(n * independent_tokens(j.config, j.budgets) for j, n in self.mode.lineages())

    @property
    def tokens_planned(self) -> int:
        return sum(n * planned_tokens(j.config, j.budgets) for j, n in self.mode.lineages())

    def summary(self) -> dict:
        independent = self.tokens_independent
        return {
            "sweep_id": self.sweep_id,
            "runs": self.runs,
            "lineages": self.lineages,
            "trunk_rows": self.trunk_rows,
            "trials": len(self.trials) + self.mode.searched_trials,
            "tokens_independent": independent,
            "tokens_planned": self.tokens_planned,
            "ratio": self.tokens_planned / independent if independent else None,
            "notes": list(self.notes),
            **self.mode.summary(),
        }


def plan(spec: SweepSpec, *, gpu_bytes: int | None = None) -> Plan:
    """Expand the spec into its mode's lineages. `gpu_bytes` (default: run.gpu_memory) sizes `pack: auto` and
    each trial's share of a GPU."""
    if spec.train.model_overrides.get("vocab_size") == AUTO_VOCAB:
        raise SpecError(
            "train.model_overrides.vocab_size is 'auto': set it from the corpus first "
            "(sweeps.data_check.check_data returns the spec with it set)"
        )
    budgets = tuple(sorted(spec.search.tokens))
    if gpu_bytes is None:
        gpu_bytes = spec_gpu_bytes(spec)
    mode = MODES[spec.search.mode].plan(spec, budgets, gpu_bytes=gpu_bytes)
    return Plan(sweep_id=spec.name, mode=mode, notes=mode.notes, pack=spec.run.pack, gpu_bytes=gpu_bytes)


def spec_gpu_bytes(spec: SweepSpec) -> int | None:
    """Bytes of one GPU as the spec gives them: run.gpu_memory, for trials that ask for a GPU. None when the
    spec names no size, and when the trials run on the CPU (nothing is sized by GPU memory there)."""
    return parse_bytes(spec.run.gpu_memory) if spec.run.uses_gpu and spec.run.gpu_memory else None


def format_plan(p: Plan) -> str:
    """A short human summary."""
    s = p.summary()
    lines = [
        f"sweep {s['sweep_id']}: {counted(s['runs'], 'run')} in {counted(s['lineages'], 'lineage')} "
        f"({counted(s['trials'], 'trial')}), plus {counted(s['trunk_rows'], 'trunk evaluation')}",
        f"tokens if independent: {s['tokens_independent']:.4g}",
        f"tokens planned:        {s['tokens_planned']:.4g}",
    ]
    if s["ratio"] is not None:
        lines.append(f"ratio:                 {s['ratio']:.3f}")
    return "\n".join(p.mode.describe(lines, s) + [f"note: {n}" for n in s["notes"]])


def memory_table(p: Plan, *, gpu_bytes: int, gpus_per_trial: float = 0.0) -> list[dict]:
    """Per kind of trial (model, batch size, variants packed): the micro-batch and activation checkpointing
    `micro_batch_size: auto` would choose on a GPU of `gpu_bytes` (bf16 autocast, the spec's head with
    liger-kernel installed), the trial's estimated peak (its step and its trunk copy), the share of a GPU the
    trial asks Ray for (`gpu_share`) and so how many run on one GPU. Raises ConfigError when a cell does not
    fit even one sequence at a time."""
    budget, rows = device_budget(gpu_bytes), {}
    trials = [*pack_jobs(p.jobs, p.pack, gpu_bytes=gpu_bytes), *p.mode.sized()]
    for trial in trials:
        cfg, k = trial.config, members_count(trial)
        key = (cfg.model, cfg.batch_size, cfg.proxy.seq_len, k)
        if key not in rows:
            choice = trial_memory(trial, gpu_bytes=gpu_bytes)
            share, _ = gpu_share(trial, gpu_bytes=gpu_bytes, requested=gpus_per_trial)
            rows[key] = {
                "model": cfg.model,
                "batch_size": cfg.batch_size,
                "seq_len": cfg.proxy.seq_len,
                "pack": k,
                "micro_batch_size": choice.micro_batch_size,
                "activation_checkpointing": choice.activation_checkpointing,
                "peak_gib": (choice.memory.peak + trial_trunk_copy(trial)) / GIB,
                "budget_gib": budget / GIB,
                "gpu_share": share,
                "trials_per_gpu": int(1 / share + 1e-9) if share <= 1 else 0,
            }
    return list(rows.values())


def format_memory_table(rows: list[dict], *, gpu_bytes: int) -> str:
    """The memory table as text, one line per kind of trial."""
    budget = rows[0]["budget_gib"] if rows else device_budget(gpu_bytes) / GIB
    lines = [
        f"memory per trial on a {gpu_bytes / GIB:.1f} GiB GPU (a step and the trunk copy, bf16; "
        f"plan for {budget:.1f} GiB):",
        f"  {'model':<14}{'batch':>6}{'seq':>6}{'pack':>5}{'micro':>7}  {'checkpointing':<14}{'peak GiB':>9}"
        f"{'GPU share':>10}{'per GPU':>8}",
    ]
    for r in rows:
        lines.append(
            f"  {r['model']:<14}{r['batch_size']:>6}{r['seq_len']:>6}{r['pack']:>5}"
            f"{r['micro_batch_size']:>7}  {'on' if r['activation_checkpointing'] else 'off':<14}"
            f"{r['peak_gib']:>9.2f}"
            f"{r['gpu_share']:>10.2f}{r['trials_per_gpu']:>8}"
        )
    return "\n".join(lines)
