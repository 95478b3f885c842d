"""The sweep specification: what to search, what to train, where to run. YAML in, validated objects out.

A spec file has four keys: `name`, `search` (grids), `train` (schedule, optimizer, data) and `run`
(resources and storage). Unknown keys are errors; every error names the field, the value and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.settings import (
    AUTO_VOCAB,
    RUN,
    TRAIN,
    Flag,
    NonNegative,
    NonNegativeInt,
    Number,
    Positive,
    PositiveInt,
    at_least,
    integer,
    parse_tokens,
    short,
    spec_fields,
)
from powersweep.proxy_models.settings import number as to_number
from powersweep.proxy_models.shapes import PRESETS, ConfigError, get_preset
from powersweep.proxy_models.train_config import DataConfig, TrainConfig
from powersweep.sweeps.outcome import one_line as _cut  # one error line, cut to a readable length
from powersweep.sweeps.safe_yaml import YamlLimitError, load_yaml

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
MAX_TOKENS = 1e15  # per budget: 1000x the largest budget of the paper's 3B models
MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_NAME = 100  # characters: the name is a directory in the store and in Ray's storage
GRID_WARNING = 10_000  # runs: `plan` and `submit` print the count above this
GRID_LIMIT = 200_000  # runs: above this a spec is refused (planning alone would take minutes)
LOGGERS = ("tensorboard", "mlflow", "wandb")  # run.loggers: experiment trackers (sweeps/trackers.py)


class SpecError(ValueError):
    """A sweep spec is invalid; the message names the field, the value and the fix."""


Tokens = Annotated[float, BeforeValidator(parse_tokens), at_least(1, high=MAX_TOKENS, what="token count")]
Seed = Annotated[int, BeforeValidator(integer), at_least(0, high=MAX_SEED, what="seed")]


def _or_auto(check):
    """'auto', or a value that `check` accepts (one validator: errors name the field, not union branches)."""
    return BeforeValidator(lambda value: value if value == "auto" else check(value))


def _non_negative(value: Any) -> float:
    number = to_number(value)
    if number < 0:
        raise ValueError(f"{number!r} must be a number of at least 0, or auto")
    return number


def _positive_integer(value: Any) -> int:
    number = integer(value)
    if number <= 0:
        raise ValueError(f"{number!r} must be positive, or auto")
    return number


NonNegativeOrAuto = Annotated[Any, _or_auto(_non_negative)]
PositiveIntOrAuto = Annotated[Any, _or_auto(_positive_integer)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdaptiveSpec(_Strict):
    """search.mode adaptive: per group (model, batch size, seed), lrs chosen round by round where they inform
    every budget's lr_opt (sweeps/adaptive.py). Lrs lie on a lattice: lr_range[0] * resolution**k."""

    lr_range: tuple[float, float] = (1e-4, 1e-2)  # first round: lrs from low up to high, `spacing` apart
    spacing: float = 2.0  # ratio between first-round lrs and of a step beyond an edge optimum; resolution**m
    # ratio between the lrs next to every budget's optimum when the search ends; sqrt(2), not finer: with the
    # analysis' window of 3 lrs on each side, 2**0.25 gave twice the error in lr_opt and b on simulated
    # surfaces (benchmarks/RESULTS.md, "Which resolution")
    resolution: float = 2**0.5
    # lineage budget per group: the tokens of this many lineages through every budget
    max_lineages: float = 8.0
    max_rounds: int = Field(30, ge=1)  # rounds per group at most, the first included (about 2 per budget)
    side_points: int = Field(3, ge=1, le=8)  # lrs wanted on each side of every budget's optimum (analysis: 3)

    @field_validator("lr_range")
    @classmethod
    def _lr_range(cls, value):
        low, high = value
        if not 0 < low <= high:
            raise ValueError(f"{list(value)} is not [low, high] of positive lrs: give e.g. [1e-4, 1e-2]")
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value):
        if not 1.05 <= value <= 4:  # lrs are kept to 3 significant digits: finer steps would collide
            raise ValueError(f"{value!r} must be a ratio between 1.05 and 4, e.g. 1.41421356 (sqrt(2))")
        return value

    @property
    def spacing_steps(self) -> int:
        """Lattice steps (of `resolution`) between first-round lrs."""
        return round(math.log(self.spacing) / math.log(self.resolution))

    @property
    def start_lrs(self) -> list[float]:
        """The first round's lrs (before rounding to 3 significant digits)."""
        low, high = self.lr_range
        count = math.floor(math.log(high / low) / math.log(self.spacing) + 1e-6) + 1
        return [low * self.spacing**j for j in range(count)]


class SearchSpec(_Strict):
    """What to search: every combination of these values is one run (or one Optuna trial's space)."""

    models: list[str] = Field(default_factory=lambda: ["cpu-xs"])  # preset names
    # muP, standard parametrisation (sp) or both: each model in each (a transfer check across widths)
    parametrisation: list[Literal["mup", "sp"]] = Field(default_factory=lambda: ["mup"])
    lr: list[Positive] = Field(default_factory=list)  # peak lrs (constant, cosine, wsd)
    batch_size: list[PositiveInt] = Field(default_factory=lambda: [16])  # sequences per step
    tokens: list[Tokens] = Field(default_factory=list)  # training budgets T (numbers or "2B")
    seeds: list[Seed] = Field(default_factory=lambda: [0])  # init and data-order seeds, 0 to 2**32 - 1
    power_a: list[Positive] = Field(default_factory=list)  # Power a grid (power schedule)
    power_b: list[Number] = Field(default_factory=list)  # Power b grid (power schedule), negative
    lr_max: list[Positive] = Field(default_factory=lambda: [0.02])  # Power cap grid (power schedule)
    # optuna: power (a, b) by TPE; adaptive: lr round by round
    mode: Literal["grid", "optuna", "adaptive"] = "grid"
    n_trials: PositiveInt = 32  # Optuna trials per cell (model, batch_size, seed, lr_max)
    a_range: tuple[Number, Number] = (3.0, 5.0)  # Table 3's a search range
    b_range: tuple[Number, Number] = (-0.6, -0.4)  # Table 3's b search range
    # optuna: trials of one study in flight at once; 1 keeps studies reproducible
    study_concurrency: PositiveInt = 1
    # adaptive mode: lr range, resolution, budget
    adaptive: AdaptiveSpec = Field(default_factory=AdaptiveSpec)

    @field_validator(
        "models", "parametrisation", "lr", "batch_size", "tokens", "seeds", "power_a", "power_b", "lr_max"
    )
    @classmethod
    def _distinct(cls, values):
        if len(set(values)) != len(values):
            raise ValueError(f"{short(values)} repeats a value: list each value once")
        return values

    @field_validator("power_b")
    @classmethod
    def _negative(cls, values):
        for v in values:
            if v >= 0:
                raise ValueError(f"{v!r}: b must be negative, e.g. -0.51 (the paper's fit)")
        return values

    @field_validator("a_range", "b_range")
    @classmethod
    def _range(cls, value, info):
        low, high = value
        if not low < high:
            raise ValueError(f"{list(value)} is not [low, high]: give the lower bound first")
        if info.field_name == "a_range" and low <= 0:
            raise ValueError(f"{list(value)}: a must be positive, e.g. [3, 5]")
        if info.field_name == "b_range" and high >= 0:
            raise ValueError(f"{list(value)}: b must be negative, e.g. [-0.6, -0.4]")
        return value

    @field_validator("models")
    @classmethod
    def _presets(cls, values):
        for name in values:
            if name not in PRESETS:
                raise ValueError(f"{name!r} is not a preset: choose from {sorted(PRESETS)}")
        return values


def _section(
    name: str, doc: str, section: str, sources: tuple[type, ...], *, nested: dict | None = None, **own: Any
) -> type[_Strict]:
    """The spec section `name`: the fields of `sources` that a spec sets under `section`
    (proxy_models/settings.py), with their types, defaults and ranges; a field whose type is in `nested`
    (a dataclass) is that section; then the section's `own` fields."""
    fields = {}
    for cls in sources:
        for key, f, hint in spec_fields(cls, section):
            if hint in (nested or {}):
                fields[key] = (nested[hint], Field(default_factory=nested[hint]))
            elif f.default is dataclasses.MISSING:
                fields[key] = (hint, Field(default_factory=f.default_factory))
            else:
                fields[key] = (hint, f.default)
    return create_model(name, __base__=_Strict, __doc__=doc, **fields, **own)


def settings_for(section: BaseModel, cls: type) -> dict:
    """The values a spec's section gives the fields of `cls` (the dataclass they were declared in), by the
    fields' names: `TrainConfig(**settings_for(spec.train, TrainConfig), ...)`."""
    where = RUN if isinstance(section, RunSpec) else TRAIN
    values = {}
    for key, f, hint in spec_fields(cls, where):
        value = getattr(section, key)
        values[f.name] = hint(**settings_for(value, hint)) if dataclasses.is_dataclass(hint) else value
    return values


DataSpec = _section("DataSpec", "Where the tokens come from.", TRAIN, (DataConfig,))
TrainSpec = _section(
    "TrainSpec",
    "What to train: schedule family and its fixed settings, optimizer, data, precision.",
    TRAIN,
    (ScheduleConfig, TrainConfig),
    nested={DataConfig: DataSpec},
    # the presets' context length; a model field, so it reaches the trainer through model_overrides
    seq_len=(PositiveInt | None, None),
)


class RunSpec(_section("RunSettings", "How a run executes.", RUN, (TrainConfig,))):
    """Where and how to run: resources of one trial, packing, concurrency, storage, and how each run executes
    (compiling: the fields of TrainConfig marked for `run:`)."""

    cpus_per_trial: NonNegative = 1.0  # Ray CPUs per trial
    gpus_per_trial: NonNegativeOrAuto = 0.0  # Ray GPUs per trial; with a known gpu_memory at least
    # each trial's memory estimate's share of the GPU (a smaller value is raised, with a note); auto: that
    # share
    pack: PositiveIntOrAuto = 1  # variants trained in lockstep per trial (GPU; keep 1 on CPU); auto:
    # as many as the memory estimate fits on gpu_memory (1 without a GPU)
    gpu_memory: str | None = Field(None, min_length=1)  # memory of one GPU, e.g. 80GiB; None: the local GPU's
    max_concurrent: NonNegativeInt = 0  # 0 = as many as resources allow
    # retries of a crashed trial (it resumes from its checkpoint)
    max_retries: Annotated[int, BeforeValidator(integer), at_least(0, high=100, what="retry count")] = 2
    checkpoint_every_steps: NonNegativeInt = 500  # trunk checkpoint interval, steps; 0 = at forks only
    storage: str | None = Field(None, min_length=1)  # results store URI; default runs/<name>
    # experiment trackers fed per step and per row; [] = none
    loggers: list[str] = Field(default_factory=list)
    curves: Flag = True  # store each lineage's training curve beside the results (trackers get it either way)

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, values):
        for name in values:
            if name not in LOGGERS:
                raise ValueError(f"{short(name)} is not a logger: choose from {list(LOGGERS)}")
        if len(set(values)) != len(values):
            raise ValueError(f"{short(values)} repeats a logger: list each once")
        return values

    @model_validator(mode="after")
    def _some_resource(self):
        if self.cpus_per_trial == 0 and self.gpus_per_trial == 0:
            raise ValueError(
                "run.cpus_per_trial and run.gpus_per_trial are both 0: a trial needs a CPU or a GPU"
            )
        return self

    @field_validator("gpu_memory")
    @classmethod
    def _gpu_memory(cls, value):
        # imports torch (through head.py): only when given
        from powersweep.proxy_models.memory import parse_bytes

        if value is not None and parse_bytes(value) <= 0:
            raise ValueError(f"{value!r} is not a memory size: write e.g. 80GiB, 80GB or 40960MiB")
        return value

    @property
    def uses_gpu(self) -> bool:
        return self.gpus_per_trial == "auto" or self.gpus_per_trial > 0


class SweepSpec(_Strict):
    name: str  # sweep id: results land under sweep_id=<name>
    search: SearchSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    run: RunSpec = Field(default_factory=RunSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value) or len(value) > MAX_NAME:
            raise ValueError(
                f"{short(value)}: use 1 to {MAX_NAME} letters, digits, '.', '_' and '-', starting "
                "with a letter or digit (the name is a directory of the store)"
            )
        if value.endswith(".parquet"):
            raise ValueError(
                f"{value!r}: a name ending in '.parquet' would read as a result file; drop the suffix"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self):
        s, t = self.search, self.train
        _check_adaptive(s, t.schedule)
        if t.schedule == "power":
            if s.lr:
                raise ValueError(
                    "search.lr is for fixed-peak schedules: the power schedule searches "
                    "power_a / power_b (and lr_max) instead"
                )
            if s.mode == "grid" and not (s.power_a and s.power_b):
                raise ValueError("search.power_a and search.power_b: give both grids, or mode: optuna")
        elif s.power_a or s.power_b:
            raise ValueError(
                f"search.power_a/power_b apply to schedule 'power', not {t.schedule!r}: use search.lr"
            )
        elif not s.lr and s.mode != "adaptive":
            raise ValueError(f"search.lr is empty: give the peak lrs to try with schedule {t.schedule!r}")
        if s.mode == "optuna" and t.schedule != "power":
            raise ValueError(
                "search.mode=optuna searches the power schedule's (a, b): set train.schedule: power"
            )
        for name in ("models", "parametrisation", "batch_size", "tokens", "seeds"):
            if not getattr(s, name):
                raise ValueError(f"search.{name} is empty: give at least one value")
        if "use_mup" in t.model_overrides and s.parametrisation != ["mup"]:
            raise ValueError(
                "train.model_overrides.use_mup and search.parametrisation both choose the parametrisation:"
                " drop use_mup and list it in search.parametrisation, e.g. [mup, sp]"
            )
        _check_models(s.models, shape_overrides(t.model_overrides))
        _check_pack(self.run.pack, s.models, shape_overrides(t.model_overrides))
        _check_steps(self)
        if self.planned_runs > GRID_LIMIT:
            raise ValueError(
                f"the search expands to {self.planned_runs:,} runs, more than {GRID_LIMIT:,}: split it "
                "into several sweeps or use fewer values"
            )
        for tokens in s.tokens:
            if tokens * (1 - t.decay_fraction) <= t.warmup_tokens:
                raise ValueError(
                    f"search.tokens={tokens:g} leaves no stable phase after warmup_tokens="
                    f"{t.warmup_tokens:g}: raise the budget or shorten the warmup"
                )
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @property
    def fingerprint(self) -> str:
        """Short hash of the resolved spec's content."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:12]

    @property
    def data_config(self) -> DataConfig:
        """The corpus of every run (`train.data`) as the trainer takes it."""
        return DataConfig(**settings_for(self.train.data, DataConfig))

    @property
    def storage(self) -> str:
        return self.run.storage or f"runs/{self.name}"

    @property
    def planned_runs(self) -> int:
        """Budget results the search expands to (Optuna: n_trials per cell), counted without expanding it."""
        s = self.search
        if s.mode == "adaptive":
            per_cell = s.adaptive.max_lineages  # the bound: every lineage the search may add
        elif self.train.schedule != "power":
            per_cell = len(s.lr)
        else:
            per_cell = s.n_trials if s.mode == "optuna" else len(s.power_a) * len(s.power_b)
            per_cell *= len(s.lr_max)
        models = len(s.models) * len(s.parametrisation)
        return models * len(s.batch_size) * len(s.seeds) * len(s.tokens) * per_cell


def shape_overrides(overrides: dict) -> dict:
    """`model_overrides` for the checks of a spec's shapes: a vocab_size still 'auto' (set from the corpus
    before planning) is the preset's meanwhile."""
    return {k: v for k, v in overrides.items() if not (k == "vocab_size" and v == AUTO_VOCAB)}


def with_vocab(spec: SweepSpec, vocab_size: int) -> SweepSpec:
    """`spec` with a model_overrides.vocab_size of 'auto' set to `vocab_size` (the corpus's); else `spec`."""
    overrides = spec.train.model_overrides
    if overrides.get("vocab_size") != AUTO_VOCAB:
        return spec
    train = spec.train.model_copy(update={"model_overrides": {**overrides, "vocab_size": vocab_size}})
    return spec.model_copy(update={"train": train})


def _check_steps(spec: SweepSpec) -> None:
    """Every budget must be at least one optimizer step (batch_size x seq_len tokens) of every model."""
    overrides = shape_overrides(spec.train.model_overrides)
    seq_len = spec.train.seq_len or max(get_preset(m, **overrides).seq_len for m in spec.search.models)
    step = max(spec.search.batch_size) * seq_len
    for tokens in spec.search.tokens:
        if tokens < step:
            raise ValueError(
                f"search.tokens={tokens:g} is less than one optimizer step of batch_size "
                f"{max(spec.search.batch_size)} x seq_len {seq_len} = {step} tokens: raise the budget "
                "or lower batch_size"
            )


def _check_models(models: list[str], overrides: dict) -> None:
    """Every preset with the overrides applied must be a valid model (ProxyConfig's own checks)."""
    for name in models:
        try:
            get_preset(name, **overrides)
        except ConfigError as error:
            raise ValueError(f"train.model_overrides on {name!r}: {error}") from None


def _check_adaptive(search: SearchSpec, schedule: str) -> None:
    """Adaptive mode searches the peak lr of wsd, cosine or constant;
    its first lrs come from adaptive.lr_range."""
    if search.mode != "adaptive":
        return
    if schedule == "power":
        raise ValueError(
            "search.mode=adaptive searches a peak lr: use train.schedule wsd, cosine or constant "
            "(mode: optuna searches the power schedule)"
        )
    if search.lr:
        raise ValueError(
            f"search.lr={search.lr} is for grid mode: adaptive mode starts from "
            "search.adaptive.lr_range and spacing; remove search.lr"
        )
    a = search.adaptive
    steps = math.log(max(a.spacing, 1.0)) / math.log(a.resolution)
    if a.spacing < a.resolution or abs(steps - round(steps)) > 0.01:
        raise ValueError(
            f"search.adaptive.spacing={a.spacing!r} is not a whole power of resolution="
            f"{a.resolution!r}: use e.g. spacing {a.resolution ** max(round(steps), 1):.4g}"
        )
    # the largest budget's optimum and side_points lrs on each side
    if a.max_lineages < 2 * a.side_points + 1:
        raise ValueError(
            f"search.adaptive.max_lineages={a.max_lineages!r} cannot hold the {2 * a.side_points + 1} "
            f"lineages that bracket the largest budget's optimum with side_points={a.side_points} lrs on "
            f"each side: raise it to {2 * a.side_points + 1} or lower side_points"
        )
    if a.max_lineages < len(a.start_lrs):
        raise ValueError(
            f"search.adaptive.max_lineages={a.max_lineages!r} is less than the {len(a.start_lrs)} "
            "lrs of the first round: raise it or narrow lr_range"
        )


def _check_pack(pack: int | str, models: list[str], overrides: dict) -> None:
    """Packing trains dense models only (PackedTrainer); the error names run.pack, its value and the fix."""
    if pack != "auto" and pack < 1:
        raise ValueError(f"run.pack={pack}: must be at least 1 (1 trains one lineage per trial)")
    moe = [m for m in models if pack != 1 and get_preset(m, **overrides).is_moe]
    if moe:
        raise ValueError(
            f"run.pack={pack}: {moe[0]!r} is a mixture of experts and packing trains dense models "
            "only; set run.pack: 1"
        )


def spec_from_dict(values: dict) -> SweepSpec:
    """Validate a spec dict; a problem raises SpecError with one line naming field, value and fix."""
    if not isinstance(values, dict):
        raise SpecError(f"a spec is a mapping with name, search, train and run, not {short(values)}")
    try:
        return SweepSpec.model_validate(values)
    except ValidationError as err:
        raise SpecError(_cut(_one_line(err.errors()[0], values))) from None


def load_spec(path: str) -> SweepSpec:
    """Read and validate the spec YAML at `path`
    (size, depth and duplicate keys checked before parsing ends)."""
    try:
        values = load_yaml(path)
    except FileNotFoundError:
        raise SpecError(f"spec file {path!r} not found: give the path to a sweep YAML") from None
    except IsADirectoryError:
        raise SpecError(f"spec file {path!r} is a directory: give the path to a sweep YAML in it") from None
    except OSError as err:
        raise SpecError(
            f"spec file {path!r} cannot be read ({err.strerror}): give a readable sweep YAML"
        ) from None
    except UnicodeDecodeError:
        raise SpecError(f"spec file {path!r} is not text (UTF-8): give a sweep YAML") from None
    except YamlLimitError as err:
        raise SpecError(_cut(f"spec file {path!r} {err}")) from None
    except yaml.YAMLError as err:
        raise SpecError(_cut(f"spec file {path!r} is not valid YAML: {str(err).splitlines()[0]}")) from None
    if not isinstance(values, dict):
        raise SpecError(f"spec file {path!r} must hold a mapping with name, search, train and run")
    return spec_from_dict(values)


def _one_line(error: dict, values: dict) -> str:
    loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        known = _known_keys(error["loc"][:-1])
        close = difflib.get_close_matches(str(error["loc"][-1]), known, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {sorted(known)}"
        return f"unknown key {loc!r} in spec: {hint}"
    if error["type"] == "missing":
        return f"{loc} is missing from the spec: add it"
    if not loc:
        return message
    return f"{loc}={short(error.get('input'))}: {message}"


def _known_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] = SweepSpec
    for part in parent:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
