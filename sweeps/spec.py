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
import reprlib
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from powersweep.proxy_models.schedules import DECAY_SHAPES
from powersweep.proxy_models.shapes import PRESETS, ConfigError, ProxyConfig, get_preset
from powersweep.proxy_models.train_config import COMPILE_MODES, COMPILE_SCOPES
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


def parse_tokens(value: Any) -> float:
    """Token counts as numbers or strings with a suffix: 2e6, "2e6", "500M", "2B", "1T"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a token count: write e.g. 2e6, 500M or 2B")
    if isinstance(value, (int, float)):
        return _finite(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMBGT]?)\s*", str(value))
    try:
        tokens = float(match.group(1)) * _SUFFIX.get(match.group(2), 1.0) if match else None
    except ValueError:
        tokens = None
    if tokens is None:
        raise ValueError(f"{_short(value)} is not a token count: write e.g. 2e6, 500M or 2B")
    return _finite(tokens)


def _finite(value: int | float) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{_short(value)} is not a finite number: give a finite value")
    return number


def _number(value: Any) -> float:
    """A finite real number. YAML 1.1 reads 1e-3 (no dot) as a string, so numeric strings count; booleans do
    not (`true` is not 1)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{_short(value)} is not a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{_short(value)} is not a number")
    return _finite(value)


def _integer(value: Any) -> int:
    """An integer written as one: not a boolean, not 4.0, not "4"."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{_short(value)} is not an integer: write a whole number such as 4")
    return value


def _at_least(low: float, *, high: float | None = None, high_open: bool = False, what: str = "number"):
    def check(value):
        too_high = high is not None and (value >= high if high_open else value > high)
        if value < low or too_high:
            bound = (
                "" if high is None else (f" and below {high:g}" if high_open else f" and at most {high:g}")
            )
            raise ValueError(f"{value!r} must be a {what} of at least {low:g}{bound}")
        return value

    return AfterValidator(check)


def _positive():
    def check(value):
        if value <= 0:
            raise ValueError(f"{value!r} must be positive")
        return value

    return AfterValidator(check)


Number = Annotated[float, BeforeValidator(_number)]
Positive = Annotated[float, BeforeValidator(_number), _positive()]
NonNegative = Annotated[float, BeforeValidator(_number), _at_least(0)]
Fraction = Annotated[float, BeforeValidator(_number), _at_least(0, high=1, high_open=True, what="fraction")]
PositiveInt = Annotated[int, BeforeValidator(_integer), _positive()]
NonNegativeInt = Annotated[int, BeforeValidator(_integer), _at_least(0, what="whole number")]
Tokens = Annotated[float, BeforeValidator(parse_tokens), _at_least(1, high=MAX_TOKENS, what="token count")]
Seed = Annotated[int, BeforeValidator(_integer), _at_least(0, high=MAX_SEED, what="seed")]


def _boolean(value: Any) -> bool:
    """true or false, as YAML writes them: not 1, not "yes"
    (a number or a string is a mistake, not a switch)."""
    if not isinstance(value, bool):
        raise ValueError(f"{_short(value)} is not a boolean: write true or false")
    return value


Flag = Annotated[bool, BeforeValidator(_boolean)]


def _or_auto(check):
    """'auto', or a value that `check` accepts (one validator: errors name the field, not union branches)."""
    return BeforeValidator(lambda value: value if value == "auto" else check(value))


def _compile_choice(value: Any) -> str | bool:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError("choose auto (compile dense models on CUDA), true or false")


def _non_negative(value: Any) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"{number!r} must be a number of at least 0, or auto")
    return number


def _positive_integer(value: Any) -> int:
    number = _integer(value)
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
    adaptive: AdaptiveSpec = Field(
        default_factory=AdaptiveSpec
    )  # adaptive mode: lr range, resolution, budget

    @field_validator("models", "lr", "batch_size", "tokens", "seeds", "power_a", "power_b", "lr_max")
    @classmethod
    def _distinct(cls, values):
        if len(set(values)) != len(values):
            raise ValueError(f"{_short(values)} repeats a value: list each value once")
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


class DataSpec(_Strict):
    source: str = Field("embedded", min_length=1)  # "embedded", a text file/dir/glob, or a .bin token file
    tokenizer: str | None = Field(None, min_length=1)  # tokenizer.json; None = bytes
    eval_tokens: PositiveInt = 65_536  # fixed held-out set size, in tokens


class TrainSpec(_Strict):
    """What to train: schedule family and its fixed settings, optimizer, data, precision."""

    schedule: Literal["constant", "cosine", "wsd", "power"] = "wsd"
    # linear warmup, tokens
    warmup_tokens: Annotated[float, BeforeValidator(parse_tokens), _at_least(0)] = 0.0
    decay_fraction: Fraction = 0.1  # share of each budget spent decaying (wsd, power), in [0, 1)
    decay_shape: str = "linear"  # linear | cosine | exp | 1-sqrt
    weight_decay: NonNegative = 0.1  # AdamW
    beta1: Fraction = 0.9  # AdamW, in [0, 1)
    beta2: Fraction = 0.95  # AdamW, in [0, 1)
    grad_clip: NonNegative = 1.0  # global norm clip; 0 disables
    seq_len: PositiveInt | None = None  # override the presets' context length
    model_overrides: dict[str, Any] = Field(default_factory=dict)  # other ProxyConfig fields
    data: DataSpec = Field(default_factory=DataSpec)
    # auto: bf16 autocast on CUDA, else fp32
    dtype: Literal["auto", "float32", "float64", "bfloat16"] = "auto"
    # loss above factor * first loss = diverged
    divergence_factor: Annotated[float, BeforeValidator(_number), _at_least(1, what="factor")] = 2.0

    @field_validator("model_overrides")
    @classmethod
    def _overrides(cls, values):
        return {key: _override(key, value) for key, value in values.items()}

    @field_validator("decay_shape")
    @classmethod
    def _shape(cls, value):
        if value not in DECAY_SHAPES:
            raise ValueError(f"{value!r} is not a decay shape: choose from {list(DECAY_SHAPES)}")
        return value


class RunSpec(_Strict):
    """Where and how to run: resources of one trial, packing, concurrency, storage."""

    cpus_per_trial: NonNegative = 1.0  # Ray CPUs per trial
    gpus_per_trial: NonNegativeOrAuto = 0.0  # Ray GPUs per trial; with a known gpu_memory at least
    # each trial's memory estimate's share of the GPU (a smaller value is raised, with a note); auto: that
    # share
    pack: PositiveIntOrAuto = 1  # variants trained in lockstep per trial (GPU; keep 1 on CPU); auto:
    # as many as the memory estimate fits on gpu_memory (1 without a GPU)
    gpu_memory: str | None = Field(None, min_length=1)  # memory of one GPU, e.g. 80GiB; None: the local GPU's
    max_concurrent: NonNegativeInt = 0  # 0 = as many as resources allow
    # retries of a crashed trial (it resumes from its checkpoint)
    max_retries: Annotated[int, BeforeValidator(_integer), _at_least(0, high=100, what="retry count")] = 2
    checkpoint_every_steps: NonNegativeInt = 500  # trunk checkpoint interval, steps; 0 = at forks only
    storage: str | None = Field(None, min_length=1)  # results store URI; default runs/<name>
    loggers: list[str] = Field(
        default_factory=list
    )  # experiment trackers fed per step and per row; [] = none
    # torch.compile the blocks: auto (dense models on CUDA) | true | false; how a run executes, not what it
    # trains: ids do not depend on it
    compile: Annotated[str | bool, BeforeValidator(_compile_choice)] = "auto"
    # torch.compile's mode where blocks compile; reduce-overhead replays the trunk as CUDA graphs (fewer host
    # launches for small models); auto: that for solo dense runs on CUDA whose step waits on the host (small
    # micro-steps), default elsewhere; not part of any id either
    compile_mode: Literal[COMPILE_MODES] = "auto"
    compile_scope: Literal[COMPILE_SCOPES] = "auto"  # blocks | trunk (all blocks one graph) | auto (blocks;
    # trunk with reduce-overhead or max-autotune, whose CUDA graphs cannot chain one block's replays)
    curves: Flag = True  # store each lineage's training curve beside the results (trackers get it either way)

    @field_validator("loggers")
    @classmethod
    def _loggers(cls, values):
        for name in values:
            if name not in LOGGERS:
                raise ValueError(f"{_short(name)} is not a logger: choose from {list(LOGGERS)}")
        if len(set(values)) != len(values):
            raise ValueError(f"{_short(values)} repeats a logger: list each once")
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
                f"{_short(value)}: use 1 to {MAX_NAME} letters, digits, '.', '_' and '-', starting "
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
        for name in ("models", "batch_size", "tokens", "seeds"):
            if not getattr(s, name):
                raise ValueError(f"search.{name} is empty: give at least one value")
        _check_models(s.models, t.model_overrides)
        _check_pack(self.run.pack, s.models, t.model_overrides)
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
        return len(s.models) * len(s.batch_size) * len(s.seeds) * len(s.tokens) * per_cell


def _override(key: str, value: Any) -> Any:
    """A model_overrides value of a known ProxyConfig field, of that field's type."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(ProxyConfig)}
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {sorted(fields)}"
        raise ValueError(f"unknown model field {key!r}: {hint}")
    kind = fields[key]
    if kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"{key}={_short(value)} must be true or false")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"{key}={_short(value)} must be a string")
    if kind in ("int", "int | None") and not (value is None and kind == "int | None"):
        _integer(value)
    if kind == "float":
        value = _number(value)
    return value


def _check_steps(spec: SweepSpec) -> None:
    """Every budget must be at least one optimizer step (batch_size x seq_len tokens) of every model."""
    overrides = spec.train.model_overrides
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
    if (
        a.max_lineages < 2 * a.side_points + 1
    ):  # the largest budget's optimum and side_points lrs on each side
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
        raise SpecError(f"a spec is a mapping with name, search, train and run, not {_short(values)}")
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


def _short(value: Any) -> str:
    """repr cut to a few dozen characters: a value shown in an error, however large it is."""
    short = reprlib.Repr()
    short.maxstring, short.maxother, short.maxlist, short.maxdict, short.maxlevel = 60, 60, 6, 4, 3
    return short.repr(value)


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
    return f"{loc}={_short(error.get('input'))}: {message}"


def _known_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] = SweepSpec
    for part in parent:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
