"""Planning: a validated spec expands into lineages (one Ray trial each) with deterministic ids.

`lineage_id` hashes everything that determines a training trajectory except its length; `run_id` hashes
the lineage_id and one token budget. Neither depends on the other values of a grid, so adding values to
a spec and running it again finds every finished run_id in the store and runs only the new cells. A trunk
evaluation's id hashes the lineage_id and the fork's tokens. `run.pack` groups lineages into trials
(`pack_jobs`) without touching any id.

In optuna mode the plan holds studies instead of jobs: one per cell (model, batch_size, seed, lr_max), each
n_trials lineages whose (a, b) are sampled while the sweep runs (sweeps/search.py); a trial's lineage gets
its ids from the same scheme (`trial_job`), so its rows are found in the store like any other.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace

from powersweep.proxy_models.budgets import (
    independent_tokens,
    plan_branches,
    planned_tokens,
    trunk_tokens,
)
from powersweep.proxy_models.memory import (
    CUDA_CONTEXT_BYTES,
    GIB,
    USABLE_FRACTION,
    MicroBatchChoice,
    choose_micro_batch,
    device_budget,
    parse_bytes,
    step_memory,
    trunk_copy_bytes,
)
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.train_config import EXECUTION_FIELDS, DataConfig, TrainConfig
from powersweep.sweeps.adaptive import Policy, first_round, lr_value
from powersweep.sweeps.spec import AdaptiveSpec, SweepSpec

SEARCHED = ("lr", "power_a", "power_b", "lr_max")  # schedule fields a pack's variants may differ in


@dataclass(frozen=True)
class LineageJob:
    """One Ray trial: a lineage (one trajectory, several token budgets) and the run_id of each budget."""

    lineage_id: str  # deterministic id of the trajectory's resolved config
    config: TrainConfig  # tokens = the largest budget
    budgets: tuple[float, ...]  # token budgets to evaluate, ascending
    run_ids: tuple[str, ...]  # one per budget, same order
    trunk_tokens: tuple[int, ...] = ()  # tokens seen at each trunk evaluation (fork points), ascending
    trunk_run_ids: tuple[str, ...] = ()  # one per trunk evaluation, same order

    @property
    def row_ids(self) -> tuple[str, ...]:
        """Every row the lineage writes: budget results, then trunk evaluations."""
        return self.run_ids + self.trunk_run_ids


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


@dataclass(frozen=True)
class Study:
    """One Optuna study of the power (a, b) search: n_trials lineages of `template`, each with its own a, b.

    The template's a, b are the centres of the ranges; a lineage's tokens do not depend on them.
    """

    study_id: str  # hash of the template and the ranges: another range starts another study
    template: LineageJob
    n_trials: int
    a_range: tuple[float, float]
    b_range: tuple[float, float]
    concurrency: int = 1  # trials of this study in flight at once


def trial_job(study: Study, a: float, b: float) -> LineageJob:
    """The lineage of one trial: the template with Power a, b;
    its ids follow from its config as in grid mode."""
    config = study.template.config
    return _job(
        replace(config, schedule=replace(config.schedule, power_a=float(a), power_b=float(b))),
        study.template.budgets,
    )


@dataclass(frozen=True)
class Plan:
    """The lineages of a sweep (fixed jobs, or Optuna studies of n_trials lineages) and their token cost."""

    sweep_id: str
    jobs: tuple[LineageJob, ...]
    notes: tuple[str, ...] = field(default=())
    studies: tuple[Study, ...] = field(default=())
    pack: int | str = 1  # lineages per trial (run.pack); 'auto': from the memory estimate and gpu_bytes
    gpu_bytes: int | None = None  # memory of one GPU (run.gpu_memory, plan --gpu-memory); None: unknown
    searches: tuple[LrSearch, ...] = field(
        default=()
    )  # adaptive mode: one per group; `jobs` is their first round

    def _lineages(self):
        """(job, copies): each fixed job once, each study's template n_trials times."""
        return [(j, 1) for j in self.jobs] + [(s.template, s.n_trials) for s in self.studies]

    @property
    def runs(self) -> int:
        return sum(n * len(j.budgets) for j, n in self._lineages())

    @property
    def lineages(self) -> int:
        return sum(n for _, n in self._lineages())

    @property
    def trunk_rows(self) -> int:
        """Trunk evaluations the plan writes (an optuna study's n_trials lineages each write theirs)."""
        return sum(n * len(j.trunk_run_ids) for j, n in self._lineages())

    @property
    def row_ids(self) -> frozenset[str]:
        """Every row the plan writes: budget results and trunk evaluations."""
        return frozenset(r for j in self.jobs for r in j.row_ids)

    @property
    def trials(self) -> tuple[PackedJob, ...]:
        """The Ray trials: lineages grouped by `pack_jobs`."""
        return pack_jobs(self.jobs, self.pack, gpu_bytes=self.gpu_bytes)

    @property
    def tokens_independent(self) -> int:
        """Tokens if every (run, budget) trained on its own."""
        return sum(n * independent_tokens(j.config, j.budgets) for j, n in self._lineages())

    @property
    def tokens_planned(self) -> int:
        return sum(n * planned_tokens(j.config, j.budgets) for j, n in self._lineages())

    def summary(self) -> dict:
        independent = self.tokens_independent
        return {
            "sweep_id": self.sweep_id,
            "runs": self.runs,
            "lineages": self.lineages,
            "trunk_rows": self.trunk_rows,
            "trials": len(self.trials) + sum(s.n_trials for s in self.studies),
            "tokens_independent": independent,
            "tokens_planned": self.tokens_planned,
            "ratio": self.tokens_planned / independent if independent else None,
            "notes": list(self.notes),
            **({"tokens_bound": sum(s.tokens_bound for s in self.searches)} if self.searches else {}),
        }


def short_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def plan(spec: SweepSpec, *, gpu_bytes: int | None = None) -> Plan:
    """Expand the spec's grid into lineages; cosine budgets become solo lineages (they share no trunk).
    `gpu_bytes` (default: run.gpu_memory) sizes `pack: auto` and each trial's share of a GPU."""
    budgets = tuple(sorted(spec.search.tokens))
    if gpu_bytes is None:
        gpu_bytes = spec_gpu_bytes(spec)
    if spec.search.mode == "optuna":
        return replace(_optuna_plan(spec, budgets), gpu_bytes=gpu_bytes)
    if spec.search.mode == "adaptive":
        return replace(_adaptive_plan(spec, budgets), gpu_bytes=gpu_bytes)
    jobs, notes = [], []
    for config in _trajectories(spec, max(budgets)):
        if all(b.fork_step == 0 for b in plan_branches(config, budgets)) and len(budgets) > 1:
            jobs.extend(_job(replace(config, tokens=t), (t,)) for t in budgets)
        else:
            jobs.append(_job(config, budgets))
    if spec.train.schedule == "cosine":
        notes.append("cosine depends on the budget at every step: each budget runs as its own lineage")
    if spec.run.pack != 1:
        notes.append(
            f"pack {spec.run.pack}: lineages that differ only in their schedule's searched values "
            "and seed train in lockstep, one trial per pack"
        )
    if spec.run.pack == "auto":
        notes.append(_pack_auto_note(spec, gpu_bytes))
    return Plan(
        sweep_id=spec.name, jobs=tuple(jobs), notes=tuple(notes), pack=spec.run.pack, gpu_bytes=gpu_bytes
    )


def spec_gpu_bytes(spec: SweepSpec) -> int | None:
    """Bytes of one GPU as the spec gives them: run.gpu_memory, for trials that ask for a GPU. None when the
    spec names no size, and when the trials run on the CPU (nothing is sized by GPU memory there)."""
    return parse_bytes(spec.run.gpu_memory) if spec.run.uses_gpu and spec.run.gpu_memory else None


def _pack_auto_note(spec: SweepSpec, gpu_bytes: int | None) -> str:
    if gpu_bytes:
        return f"pack auto: as many variants per trial as fit {gpu_bytes / GIB:.1f} GiB of GPU memory"
    if not spec.run.uses_gpu:
        return "pack auto: trials run on the CPU (run.gpus_per_trial: 0): one variant per trial"
    return "pack auto: no GPU memory known (run.gpu_memory): one variant per trial"


def _optuna_plan(spec: SweepSpec, budgets: tuple[float, ...]) -> Plan:
    """One study per cell; its template's a, b (the ranges' centres) stand for the trials' sampled ones."""
    s = spec.search
    studies = []
    for config in _trajectories(spec, max(budgets)):
        template = _job(config, budgets)
        studies.append(
            Study(
                short_hash(["optuna", template.lineage_id, s.a_range, s.b_range]),
                template,
                s.n_trials,
                s.a_range,
                s.b_range,
                s.study_concurrency,
            )
        )
    note = f"optuna mode: {s.n_trials} (a, b) trials per cell are chosen while the sweep runs"
    return Plan(sweep_id=spec.name, jobs=(), notes=(note,), studies=tuple(studies))


def _identity(config: TrainConfig) -> dict:
    """What determines a trajectory: the resolved config less its length and how it executes."""
    excluded = ("tokens", "log_every_steps", "device", *EXECUTION_FIELDS)  # how a run executes is not its id
    return {k: v for k, v in asdict(config).items() if k not in excluded}


def settings_id(config: TrainConfig) -> str:
    """Hash of a run's training settings other than its cell and searched values (model, batch size, seed; lr
    or power a, b, lr_max): runs with equal settings_id differ only in those, so analysis may average or
    compare them; runs whose settings_id differ (another warmup, optimizer, corpus...) never share a cell."""
    identity = _identity(config)
    identity["schedule"] = {k: v for k, v in identity["schedule"].items() if k not in SEARCHED}
    for name in ("model", "batch_size", "seed"):
        del identity[name]
    return short_hash(["settings", identity])


def _job(config: TrainConfig, budgets: tuple[float, ...]) -> LineageJob:
    identity = _identity(config)
    identity["compile"] = False  # an execution detail now; every id made before it was one hashed False
    if len(budgets) == 1 and config.schedule.name == "cosine":
        identity["tokens"] = budgets[0]  # a cosine trajectory is tied to its budget
    lineage_id = short_hash(identity)
    trunk = tuple(trunk_tokens(config, budgets))
    return LineageJob(
        lineage_id,
        config,
        budgets,
        tuple(short_hash([lineage_id, t]) for t in budgets),
        trunk,
        tuple(trunk_row_id(lineage_id, t) for t in trunk),
    )


def trunk_row_id(lineage_id: str, tokens: int) -> str:
    """run_id of the trunk evaluation at `tokens` (the fork's tokens seen)."""
    return short_hash([lineage_id, "trunk", tokens])


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
    beside their trunk copy, fits a GPU of `gpu_bytes` by the memory estimate (bf16, fused head); 1 when no
    GPU memory is known or none fit. More variants per trial beat more trials per GPU: one process, one CUDA
    context, larger kernels."""
    if gpu_bytes is None:
        return 1
    budget = device_budget(gpu_bytes)
    for k in range(min(candidates, MAX_PACK), 1, -1):
        step = step_memory(config.proxy, micro_batch_size=config.batch_size, variants=k)
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
        variants=_members_count(trial),
    )


def trial_trunk_copy(trial: LineageJob | PackedJob) -> int:
    """Bytes of the trunk state the trial's lineage keeps on the device while a branch decays."""
    return trunk_copy_bytes(trial.config.proxy, variants=_members_count(trial))


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
            f"x {_members_count(trial)} variants: its step needs about {need / GIB:.1f} GiB of the "
            f"{gpu_bytes / GIB:.1f} GiB GPU, so it asks for {share:g} GPU"
        )
    )
    return share, note


def trial_budget_gib(trial: LineageJob | PackedJob, share: float, *, gpu_bytes: int) -> float:
    """The memory budget (GiB) a trial's steps plan for within its share of a GPU: the share of what a GPU
    offers, less its own CUDA context and its trunk copy."""
    return max(share * gpu_bytes * USABLE_FRACTION - CUDA_CONTEXT_BYTES - trial_trunk_copy(trial), 0) / GIB


def _members_count(trial: LineageJob | PackedJob) -> int:
    return len(trial.members) if isinstance(trial, PackedJob) else 1


def _pack_key(job: LineageJob) -> str:
    config = asdict(job.config)
    config["schedule"] = {k: v for k, v in config["schedule"].items() if k not in SEARCHED}
    del config["seed"]  # a packed variant trains on its own seed's weights and batches
    return short_hash([config, job.budgets])


def _trajectories(spec: SweepSpec, longest: float):
    """One TrainConfig per combination of model, batch size, seed and lr (or power a, b, lr_max)."""
    s, t = spec.search, spec.train
    overrides = {**t.model_overrides, **({"seq_len": t.seq_len} if t.seq_len else {})}
    for model, batch_size, seed, schedule in itertools.product(
        s.models, s.batch_size, s.seeds, _schedules(spec)
    ):
        yield TrainConfig(
            model=model,
            model_overrides=overrides,
            schedule=schedule,
            batch_size=batch_size,
            tokens=longest,
            seed=seed,
            data=DataConfig(source=t.data.source, tokenizer=t.data.tokenizer, eval_tokens=t.data.eval_tokens),
            weight_decay=t.weight_decay,
            beta1=t.beta1,
            beta2=t.beta2,
            grad_clip=t.grad_clip,
            dtype=t.dtype,
            divergence_factor=t.divergence_factor,
            compile=spec.run.compile,
            compile_mode=spec.run.compile_mode,
            compile_scope=spec.run.compile_scope,
        )


def _schedules(spec: SweepSpec):
    t, s = spec.train, spec.search
    common = dict(
        name=t.schedule,
        warmup_tokens=t.warmup_tokens,
        decay_fraction=t.decay_fraction,
        decay_shape=t.decay_shape,
    )
    if t.schedule != "power":
        return [ScheduleConfig(lr=lr, **common) for lr in s.lr]
    if s.mode == "optuna":  # one template per lr_max: the study samples a, b
        return [
            ScheduleConfig(power_a=sum(s.a_range) / 2, power_b=sum(s.b_range) / 2, lr_max=m, **common)
            for m in s.lr_max
        ]
    return [
        ScheduleConfig(power_a=a, power_b=b, lr_max=m, **common)
        for a, b, m in itertools.product(s.power_a, s.power_b, s.lr_max)
    ]


@dataclass(frozen=True)
class LrSearch:
    """The adaptive lr search of one group (model, batch size, seed, train settings): its lineages are the
    template's config at the lrs the policy asks for (sweeps/adaptive.py), with ids as in grid mode."""

    template: TrainConfig  # the group's trajectory; its lr is replaced by each lattice value
    budgets: tuple[float, ...]  # token budgets, ascending
    policy: Policy
    lineage_tokens: tuple[tuple[float, int], ...]  # (T, tokens of one lineage through every budget up to T)

    @property
    def tokens_bound(self) -> float:
        """The most tokens the search may train: the lineage budget."""
        return self.policy.max_lineages * self.lineage_tokens[-1][1]

    def jobs(self, k: int, top: float) -> list[LineageJob]:
        """The lineage(s) of lattice index k through every budget up to `top` (cosine: one per budget)."""
        config = replace(self.template, schedule=replace(self.template.schedule, lr=lr_value(self.policy, k)))
        return _lineage_jobs(config, tuple(t for t in self.budgets if t <= top))


def adaptive_policy(spec: AdaptiveSpec) -> Policy:
    """The search policy of an `adaptive` block: a lattice anchored at lr_range's low end."""
    step = spec.spacing_steps
    return Policy(
        anchor=spec.lr_range[0],
        resolution=spec.resolution,
        spacing_steps=step,
        start=tuple(j * step for j in range(len(spec.start_lrs))),
        max_lineages=spec.max_lineages,
        max_rounds=spec.max_rounds,
        side_points=spec.side_points,
    )


def _adaptive_plan(spec: SweepSpec, budgets: tuple[float, ...]) -> Plan:
    """One search per group; the plan's jobs are the first round
    (every start lr through the smallest budget)."""
    policy, searches, jobs = adaptive_policy(spec.search.adaptive), [], []
    placeholder = spec.model_copy(update={"search": spec.search.model_copy(update={"lr": [policy.anchor]})})
    for config in _trajectories(placeholder, max(budgets)):  # one per group; each lineage sets its own lr
        tokens = tuple((t, planned_tokens(config, [b for b in budgets if b <= t])) for t in budgets)
        search = LrSearch(config, budgets, policy, tokens)
        searches.append(search)
        jobs.extend(j for k, top in first_round(policy, budgets).items() for j in search.jobs(k, top))
    a = spec.search.adaptive
    note = (
        f"adaptive mode: round 1 trains {len(policy.start)} lrs per group ({a.spacing:g}x apart from "
        f"{a.lr_range[0]:g}) through the smallest budget; later rounds climb the budgets and add lrs down to "
        f"{a.resolution:.4g}x around each budget's optimum, "
        f"at most {policy.max_rounds} rounds and {a.max_lineages:g} lineages' tokens per group"
    )
    return Plan(
        sweep_id=spec.name, jobs=tuple(jobs), notes=(note,), pack=spec.run.pack, searches=tuple(searches)
    )


def _lineage_jobs(config: TrainConfig, budgets: tuple[float, ...]) -> list[LineageJob]:
    """One lineage through `budgets`, or one per budget where they share no trunk (cosine)."""
    if all(b.fork_step == 0 for b in plan_branches(config, budgets)) and len(budgets) > 1:
        return [_job(replace(config, tokens=t), (t,)) for t in budgets]
    return [_job(replace(config, tokens=max(budgets)), budgets)]


def format_plan(p: Plan) -> str:
    """A short human summary."""
    s = p.summary()
    lines = [
        f"sweep {s['sweep_id']}: {s['runs']} runs in {s['lineages']} lineages ({s['trials']} trials), "
        f"plus {s['trunk_rows']} trunk evaluations",
        f"tokens if independent: {s['tokens_independent']:.4g}",
        f"tokens planned:        {s['tokens_planned']:.4g}",
    ]
    if s["ratio"] is not None:
        lines.append(f"ratio:                 {s['ratio']:.3f}")
    if p.searches:
        lines[0] = f"sweep {s['sweep_id']}, adaptive: round 1 is " + lines[0].removeprefix(
            f"sweep {s['sweep_id']}: "
        )
        lines.append(
            f"tokens at most:        {s['tokens_bound']:.4g} (the lineage budget of "
            f"{len(p.searches)} group{'s' if len(p.searches) > 1 else ''})"
        )
    return "\n".join(lines + [f"note: {n}" for n in s["notes"]])


def memory_table(p: Plan, *, gpu_bytes: int, gpus_per_trial: float = 0.0) -> list[dict]:
    """Per kind of trial (model, batch size, variants packed): the micro-batch and activation checkpointing
    `micro_batch_size: auto` would choose on a GPU of `gpu_bytes` (bf16 autocast, fused head), the trial's
    estimated peak (its step and its trunk copy), the share of a GPU the trial asks Ray for (`gpu_share`) and
    so how many run on one GPU. Raises ConfigError when a cell does not fit even one sequence at a time."""
    budget, rows = device_budget(gpu_bytes), {}
    trials = list(pack_jobs(p.jobs, p.pack, gpu_bytes=gpu_bytes)) + [s.template for s in p.studies]
    for trial in trials:
        cfg, k = trial.config, _members_count(trial)
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
        f"memory per trial on a {gpu_bytes / GIB:.1f} GiB GPU (a step and the trunk copy; bf16, fused head; "
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
