"""Settings declared once: a dataclass field's type carries its range, and marks where a spec sets it.

A setting is one field of the dataclass that uses it (`TrainConfig`, `DataConfig`, `ScheduleConfig`): its
type is one of the value types below (a pydantic `Annotated` type whose validators say what it accepts), its
default is its default, and its comment is its doc. `spec_setting(default, "train")` marks the fields a sweep
spec sets under `train:` (or `run:`): the spec's sections are built from the marked fields
(sweeps/spec.py), so a new setting is one field here and appears in the spec, is validated there with an
error naming `train.<field>`, and reaches the trainer by name. Constructed directly, a dataclass checks its
fields with the same validators (`check_settings`): one error names the field, the value and the fix.

No torch here: a sweep is planned without it.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import numbers
import re
import reprlib
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator

from powersweep.proxy_models.shapes import ConfigError, ProxyConfig

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
TRAIN, RUN = "train", "run"  # the spec's sections


def short(value: Any) -> str:
    """repr cut to a few dozen characters: a value shown in an error, however large it is."""
    cut = reprlib.Repr()
    cut.maxstring, cut.maxother, cut.maxlist, cut.maxdict, cut.maxlevel = 60, 60, 6, 4, 3
    return cut.repr(value)


def finite(value: int | float) -> float:
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{short(value)} is not a finite number: give a finite value")
    return number


def parse_tokens(value: Any) -> float:
    """Token counts as numbers or strings with a suffix: 2e6, "2e6", "500M", "2B", "1T"."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a token count: write e.g. 2e6, 500M or 2B")
    if isinstance(value, (int, float)):
        return finite(value)
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([KMBGT]?)\s*", str(value))
    try:
        tokens = float(match.group(1)) * _SUFFIX.get(match.group(2), 1.0) if match else None
    except ValueError:
        tokens = None
    if tokens is None:
        raise ValueError(f"{short(value)} is not a token count: write e.g. 2e6, 500M or 2B")
    return finite(tokens)


def number(value: Any) -> float:
    """A finite real number. YAML 1.1 reads 1e-3 (no dot) as a string, so numeric strings count; booleans do
    not (`true` is not 1)."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError(f"{short(value)} is not a number") from None
    if not isinstance(value, (int, float)):
        raise ValueError(f"{short(value)} is not a number")
    return finite(value)


def integer(value: Any) -> int:
    """An integer written as one (numpy's too): not a boolean, not 4.0, not "4"."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{short(value)} is not an integer: write a whole number such as 4")
    return value if type(value) is int else int(value)


def boolean(value: Any) -> bool:
    """true or false, as YAML writes them: not 1, not "yes" (a number or a string is a mistake, not a
    switch)."""
    if not isinstance(value, bool):
        raise ValueError(f"{short(value)} is not a boolean: write true or false")
    return value


def at_least(low: float, *, high: float | None = None, high_open: bool = False, what: str = "number"):
    def check(value):
        too_high = high is not None and (value >= high if high_open else value > high)
        if value < low or too_high:
            bound = (
                "" if high is None else (f" and below {high:g}" if high_open else f" and at most {high:g}")
            )
            raise ValueError(f"{value!r} must be a {what} of at least {low:g}{bound}")
        return value

    return AfterValidator(check)


def positive():
    def check(value):
        if value <= 0:
            raise ValueError(f"{value!r} must be positive")
        return value

    return AfterValidator(check)


def one_of(choices: tuple[str, ...], what: str):
    def check(value):
        if value not in choices:
            raise ValueError(f"{value!r} is not a {what}: choose from {list(choices)}")
        return value

    return AfterValidator(check)


def compile_choice(value: Any) -> str | bool:
    if isinstance(value, bool) or value == "auto":
        return value
    raise ValueError("choose 'auto' (compile dense models on CUDA), true or false")


Number = Annotated[float, BeforeValidator(number)]
Positive = Annotated[float, BeforeValidator(number), positive()]
NonNegative = Annotated[float, BeforeValidator(number), at_least(0)]
Fraction = Annotated[float, BeforeValidator(number), at_least(0, high=1, high_open=True, what="fraction")]
PositiveInt = Annotated[int, BeforeValidator(integer), positive()]
NonNegativeInt = Annotated[int, BeforeValidator(integer), at_least(0, what="whole number")]
TokenCount = Annotated[float, BeforeValidator(parse_tokens), at_least(0)]
Flag = Annotated[bool, BeforeValidator(boolean)]


AUTO_VOCAB = "auto"  # model_overrides.vocab_size: the corpus's vocabulary


def model_overrides(values: dict) -> dict:
    """`model_overrides`: known ProxyConfig fields, each a value of that field's type (vocab_size may be
    'auto': the corpus's)."""
    if not isinstance(values, dict):
        raise ValueError(f"{short(values)} is not a mapping of model fields, e.g. {{seq_len: 128}}")
    return {key: _override(key, value) for key, value in values.items()}


def _override(key: str, value: Any) -> Any:
    fields = {f.name: str(f.type) for f in dataclasses.fields(ProxyConfig)}
    if key not in fields:
        close = difflib.get_close_matches(key, fields, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"known keys: {sorted(fields)}"
        raise ValueError(f"unknown model field {key!r}: {hint}")
    kind = fields[key]
    if key == "vocab_size" and value == AUTO_VOCAB:
        return value  # set from the corpus before a sweep plans (sweeps/data_check.py)
    if kind == "bool" and not isinstance(value, bool):
        raise ValueError(f"{key}={short(value)} must be true or false")
    if kind == "str" and not isinstance(value, str):
        raise ValueError(f"{key}={short(value)} must be a string")
    if kind in ("int", "int | None") and not (value is None and kind == "int | None"):
        integer(value)
    if kind == "float":
        value = number(value)
    return value


ModelOverrides = Annotated[dict, AfterValidator(model_overrides)]
CompileChoice = Annotated[str | bool, BeforeValidator(compile_choice)]


def spec_setting(
    default: Any = dataclasses.MISSING,
    section: str = TRAIN,
    *,
    key: str | None = None,
    default_factory: Any = dataclasses.MISSING,
    in_ids: Literal["always", "when set"] = "always",
) -> Any:
    """A dataclass field that a sweep spec sets under `section` (as `key`, default: the field's name).
    `in_ids="when set"`: a run's ids hash the field only where it differs from its default (a setting added
    after ids were made: every id made before it stays what it was; `id_defaults`)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"spec": section, "key": key, "in_ids": in_ids},
    )


@functools.cache
def id_defaults(cls: type) -> dict[str, Any]:
    """Field name -> default of the fields of the dataclass `cls` that ids hash only when set otherwise."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.metadata.get("in_ids") == "when set"}


def spec_fields(cls: type, section: str) -> list[tuple[str, dataclasses.Field, Any]]:
    """(spec key, field, annotated type) of the fields of `cls` that a spec sets under `section`."""
    hints = _hints(cls)
    return [
        (f.metadata.get("key") or f.name, f, hints[f.name])
        for f in dataclasses.fields(cls)
        if f.metadata.get("spec") == section
    ]


def check_settings(instance: Any, *, error: type[ConfigError] = ConfigError) -> None:
    """Check every field of a dataclass `instance` against its type's validators (and a Literal's choices),
    storing what they make of it (2e6 from "2M"); `error` names the first field that fails, as the spec
    calls it."""
    for name, key, check in _checks(type(instance)):
        value = getattr(instance, name)
        try:
            checked = check(value)
        except ValueError as problem:
            raise error(f"{key}={short(value)}: {problem}") from None
        if checked is not value:
            object.__setattr__(instance, name, checked)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


@functools.cache
def _checks(cls: type) -> tuple[tuple[str, str, Callable[[Any], Any]], ...]:
    """(field name, spec key, check) of each field of the dataclass `cls`: its type read once, not per
    instance (a plan makes a TrainConfig per budget of every lineage)."""
    hints = _hints(cls)
    return tuple(
        (f.name, f.metadata.get("key") or f.name, _check(hints[f.name])) for f in dataclasses.fields(cls)
    )


def _check(hint: Any) -> Callable[[Any], Any]:
    """The function that checks a value against `hint`: an Annotated type's validators, a Literal's choices,
    an optional type's None or the other arm's check; any other type passes its value through."""
    arms = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else ()
    if type(None) in arms:  # an optional setting: None, or a value of its other type
        other = _check(next(a for a in arms if a is not type(None)))
        return lambda value: None if value is None else other(value)
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)

        def choose(value: Any) -> Any:
            if value not in choices:
                raise ValueError(f"choose one of {list(choices)}")
            return value

        return choose
    if typing.get_origin(hint) is not Annotated:
        return lambda value: value
    rules = [r.func for r in hint.__metadata__ if isinstance(r, BeforeValidator)]
    rules += [r.func for r in hint.__metadata__ if isinstance(r, AfterValidator)]

    def validate(value: Any) -> Any:
        for rule in rules:
            value = rule(value)
        return value

    return validate
