"""The sweep specification: what to search, what to train, where to run. YAML in, validated objects out.

A spec file has four keys: `name`, `search` (grids), `train` (schedule, optimizer, data) and `run`
(resources and storage). Unknown keys are errors; every error names the field, the value and the fix.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import re
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from proxy_models.config import PRESETS, get_preset
from proxy_models.schedules import DECAY_SHAPES

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}


class SpecError(ValueError):
    """A sweep spec is invalid; the message names the field, the value and the fix."""


def parse_tokens(value: Any) -> float:
    """Token counts as numbers or strings with a suffix: 2e6, "2e6", "500M", "2B", "1T"."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMBGT]?)\s*", str(value))
    if not match:
        raise ValueError(f"{value!r} is not a token count: write e.g. 2e6, 500M or 2B")
    return float(match.group(1)) * _SUFFIX.get(match.group(2), 1.0)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AdaptiveSpec(_Strict):
    """search.mode adaptive: per group (model, batch size, seed), lrs chosen round by round where they inform
    every budget's lr_opt (sweeps/adaptive.py). Lrs lie on a lattice: lr_range[0] * resolution**k."""

    lr_range: tuple[float, float] = (1e-4, 1e-2)  # first round: lrs from low up to high, `spacing` apart
    spacing: float = 2.0  # ratio between first-round lrs and of a step beyond an edge optimum; resolution**m
    resolution: float = 2 ** 0.25  # ratio between the lrs next to every budget's optimum when the search ends
    max_lineages: float = 8.0  # lineage budget per group: the tokens of this many lineages through every budget
    max_rounds: int = Field(10, ge=1)  # rounds per group at most, the first included

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
            raise ValueError(f"{value!r} must be a ratio between 1.05 and 4, e.g. 1.189 (2**0.25)")
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
        return [low * self.spacing ** j for j in range(count)]


class SearchSpec(_Strict):
    """What to search: every combination of these values is one run (or one Optuna trial's space)."""

    models: list[str] = Field(default_factory=lambda: ["cpu-xs"])  # preset names
    lr: list[float] = Field(default_factory=list)  # peak lrs (constant, cosine, wsd)
    batch_size: list[int] = Field(default_factory=lambda: [16])  # sequences per step
    tokens: list[float] = Field(default_factory=list)  # training budgets T (numbers or "2B")
    seeds: list[int] = Field(default_factory=lambda: [0])  # init and data-order seeds
    power_a: list[float] = Field(default_factory=list)  # Power a grid (power schedule)
    power_b: list[float] = Field(default_factory=list)  # Power b grid (power schedule)
    lr_max: list[float] = Field(default_factory=lambda: [0.02])  # Power cap grid (power schedule)
    mode: Literal["grid", "optuna", "adaptive"] = "grid"  # optuna: power (a, b) by TPE; adaptive: lr round by round
    n_trials: int = 32  # Optuna trials per cell (model, batch_size, seed, lr_max)
    a_range: tuple[float, float] = (3.0, 5.0)  # Table 3's a search range
    b_range: tuple[float, float] = (-0.6, -0.4)  # Table 3's b search range
    study_concurrency: int = 1  # optuna: trials of one study in flight at once; 1 keeps each study reproducible
    adaptive: AdaptiveSpec = Field(default_factory=AdaptiveSpec)  # adaptive mode: lr range, resolution, budget

    @field_validator("tokens", mode="before")
    @classmethod
    def _tokens(cls, values):
        return [parse_tokens(v) for v in values] if isinstance(values, list) else values

    @field_validator("lr", "batch_size", "tokens", "power_a", "lr_max", "n_trials", "study_concurrency")
    @classmethod
    def _positive(cls, values):
        for v in values if isinstance(values, list) else [values]:
            if v <= 0:
                raise ValueError(f"{v!r} must be positive")
        if isinstance(values, list) and len(set(values)) != len(values):
            raise ValueError(f"{values} repeats a value: list each value once")
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
    source: str = "embedded"  # "embedded", a text file/dir/glob, or a .bin token file
    tokenizer: str | None = None  # tokenizer.json; None = bytes
    eval_tokens: int = 65_536  # fixed held-out set size, in tokens


class TrainSpec(_Strict):
    """What to train: schedule family and its fixed settings, optimizer, data, precision."""

    schedule: Literal["constant", "cosine", "wsd", "power"] = "wsd"
    warmup_tokens: float = 0.0  # linear warmup, in tokens (numbers or "1B")
    decay_fraction: float = 0.1  # share of each budget spent decaying (wsd, power)
    decay_shape: str = "linear"  # linear | cosine | exp | 1-sqrt
    weight_decay: float = 0.1  # AdamW
    beta1: float = 0.9  # AdamW
    beta2: float = 0.95  # AdamW
    grad_clip: float = 1.0  # global norm clip; 0 disables
    seq_len: int | None = None  # override the presets' context length
    model_overrides: dict[str, Any] = Field(default_factory=dict)  # other ProxyConfig fields
    data: DataSpec = Field(default_factory=DataSpec)
    dtype: str = "auto"  # auto | float32 | float64 | bfloat16
    divergence_factor: float = 2.0  # loss above factor * first loss = diverged

    @field_validator("warmup_tokens", mode="before")
    @classmethod
    def _tokens(cls, value):
        return parse_tokens(value)

    @field_validator("decay_shape")
    @classmethod
    def _shape(cls, value):
        if value not in DECAY_SHAPES:
            raise ValueError(f"{value!r} is not a decay shape: choose from {list(DECAY_SHAPES)}")
        return value


class RunSpec(_Strict):
    """Where and how to run: resources of one trial, packing, concurrency, storage."""

    cpus_per_trial: float = 1.0  # Ray CPUs per trial
    gpus_per_trial: float = 0.0  # Ray GPUs per trial (fractions pack trials on one GPU)
    pack: int = 1  # variants trained in lockstep per trial (GPU; keep 1 on CPU)
    max_concurrent: int = 0  # 0 = as many as resources allow
    max_retries: int = 2  # retries of a crashed trial (resumes from its checkpoint)
    checkpoint_every_steps: int = Field(500, ge=0)  # trunk checkpoint interval, steps; 0 = at forks only
    storage: str | None = None  # results store URI; default runs/<name>


class SweepSpec(_Strict):
    name: str  # sweep id: results land under sweep_id=<name>
    search: SearchSpec
    train: TrainSpec = Field(default_factory=TrainSpec)
    run: RunSpec = Field(default_factory=RunSpec)

    @field_validator("name")
    @classmethod
    def _name(cls, value):
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' and '-'")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        s, t = self.search, self.train
        _check_adaptive(s, t.schedule)
        if t.schedule == "power":
            if s.lr:
                raise ValueError("search.lr is for fixed-peak schedules: the power schedule searches "
                                 "power_a / power_b (and lr_max) instead")
            if s.mode == "grid" and not (s.power_a and s.power_b):
                raise ValueError("search.power_a and search.power_b: give both grids, or mode: optuna")
        elif s.power_a or s.power_b:
            raise ValueError(f"search.power_a/power_b apply to schedule 'power', not {t.schedule!r}: use search.lr")
        elif not s.lr and s.mode != "adaptive":
            raise ValueError(f"search.lr is empty: give the peak lrs to try with schedule {t.schedule!r}")
        if s.mode == "optuna" and t.schedule != "power":
            raise ValueError("search.mode=optuna searches the power schedule's (a, b): set train.schedule: power")
        for name in ("models", "batch_size", "tokens", "seeds"):
            if not getattr(s, name):
                raise ValueError(f"search.{name} is empty: give at least one value")
        _check_pack(self.run.pack, s.models, t.model_overrides)
        for tokens in s.tokens:
            if tokens * (1 - t.decay_fraction) <= t.warmup_tokens:
                raise ValueError(f"search.tokens={tokens:g} leaves no stable phase after warmup_tokens="
                                 f"{t.warmup_tokens:g}: raise the budget or shorten the warmup")
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


def _check_adaptive(search: SearchSpec, schedule: str) -> None:
    """Adaptive mode searches the peak lr of wsd, cosine or constant; its first lrs come from adaptive.lr_range."""
    if search.mode != "adaptive":
        return
    if schedule == "power":
        raise ValueError("search.mode=adaptive searches a peak lr: use train.schedule wsd, cosine or constant "
                         "(mode: optuna searches the power schedule)")
    if search.lr:
        raise ValueError(f"search.lr={search.lr} is for grid mode: adaptive mode starts from "
                         "search.adaptive.lr_range and spacing; remove search.lr")
    a = search.adaptive
    steps = math.log(max(a.spacing, 1.0)) / math.log(a.resolution)
    if a.spacing < a.resolution or abs(steps - round(steps)) > 0.01:
        raise ValueError(f"search.adaptive.spacing={a.spacing!r} is not a whole power of resolution="
                         f"{a.resolution!r}: use e.g. spacing {a.resolution ** max(round(steps), 1):.4g}")
    if a.max_lineages < len(a.start_lrs):
        raise ValueError(f"search.adaptive.max_lineages={a.max_lineages!r} is less than the {len(a.start_lrs)} "
                         "lrs of the first round: raise it or narrow lr_range")


def _check_pack(pack: int, models: list[str], overrides: dict) -> None:
    """Packing trains dense models only (PackedTrainer); the error names run.pack, its value and the fix."""
    if pack < 1:
        raise ValueError(f"run.pack={pack}: must be at least 1 (1 trains one lineage per trial)")
    moe = [m for m in models if pack > 1 and get_preset(m, **overrides).is_moe]
    if moe:
        raise ValueError(f"run.pack={pack}: {moe[0]!r} is a mixture of experts and packing trains dense models "
                         "only; set run.pack: 1")


def spec_from_dict(values: dict) -> SweepSpec:
    """Validate a spec dict; a problem raises SpecError with one line naming field, value and fix."""
    try:
        return SweepSpec.model_validate(values)
    except ValidationError as err:
        raise SpecError(_one_line(err.errors()[0], values)) from None


def load_spec(path: str) -> SweepSpec:
    try:
        with open(path) as f:
            values = yaml.safe_load(f)
    except FileNotFoundError:
        raise SpecError(f"spec file {path!r} not found: give the path to a sweep YAML") from None
    except yaml.YAMLError as err:
        raise SpecError(f"spec file {path!r} is not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(values, dict):
        raise SpecError(f"spec file {path!r} must hold a mapping with name, search, train and run")
    return spec_from_dict(values)


def _one_line(error: dict, values: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"])
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
    return f"{loc}={error.get('input')!r}: {message}"


def _known_keys(parent: tuple) -> list[str]:
    model: type[BaseModel] = SweepSpec
    for part in parent:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)
