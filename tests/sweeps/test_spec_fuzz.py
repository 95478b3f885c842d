"""Fuzzing `powersweep submit` with invalid specs: every one exits 2 with one line on stderr, no traceback,
nothing written and no Ray started.

A mutation replaces a field of a valid spec with a value that field can never take (a wrong type, a value out
of range, an unknown key, a deleted required key) or replaces the whole file with arbitrary bytes or text; a
spec with at least one such mutation is invalid, so an exit code other than 2 is a defect.
"""

from __future__ import annotations

import collections
import math

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from powersweep.cli import main
from powersweep.sweeps import execute

VALID = {
    "name": "fuzz",
    "search": {
        "models": ["cpu-xs"],
        "batch_size": [4],
        "lr": [0.004, 0.016],
        "tokens": [1024, 2048],
        "seeds": [0],
    },
    "train": {
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
    "run": {"cpus_per_trial": 1, "max_retries": 1},
}
OUTCOMES: collections.Counter = collections.Counter()

junk_text = st.text(alphabet="abcxyz_/ ", min_size=1, max_size=8).filter(lambda t: t.strip())
containers = st.one_of(
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(junk_text, st.integers(), min_size=1, max_size=2),
)
not_a_number = st.one_of(
    st.booleans(), junk_text, containers, st.just(math.nan), st.just(math.inf), st.just(-math.inf), st.none()
)
not_a_list = st.one_of(
    st.booleans(),
    st.integers(),
    junk_text,
    st.dictionaries(junk_text, st.integers(), min_size=1, max_size=2),
    st.none(),
)
negative = st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False)
non_positive = st.floats(max_value=0, allow_nan=False, allow_infinity=False)


def number(out_of_range):
    return st.one_of(not_a_number, out_of_range)


def integer(out_of_range):
    return st.one_of(
        not_a_number,
        st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: f != int(f)),
        out_of_range,
    )


def number_list(bad_element):
    return st.one_of(
        not_a_list, st.just([]), st.lists(bad_element, min_size=1, max_size=3), st.just([0.004, 0.004])
    )


# Values each field can never take.
BAD = {
    ("name",): st.one_of(
        st.none(),
        st.integers(),
        st.just(""),
        st.just("x" * 101),
        st.just("a/b"),
        st.just("x.parquet"),
        st.just("../up"),
        st.booleans(),
        containers,
    ),
    ("search", "models"): st.one_of(
        not_a_list, st.just([]), st.just(["no-such-model"]), st.lists(st.integers(), min_size=1)
    ),
    ("search", "lr"): number_list(number(non_positive)),
    ("search", "batch_size"): number_list(integer(st.integers(max_value=0))),
    ("search", "tokens"): number_list(
        st.one_of(
            st.booleans(),
            junk_text,
            st.just(math.nan),
            st.just("1e400"),
            st.just(1e30),
            st.integers(min_value=-(10**6), max_value=127),
        )
    ),
    ("search", "seeds"): number_list(integer(st.one_of(st.integers(max_value=-1), st.just(2**40)))),
    ("search", "power_a"): st.just([4.0]),  # a Power grid with schedule wsd
    ("search", "mode"): st.one_of(junk_text, st.integers(), st.just("optuna")),  # optuna needs schedule power
    ("search", "n_trials"): integer(st.integers(max_value=0)),
    # power: lr not a grid
    ("train", "schedule"): st.one_of(junk_text, st.integers(), st.none(), st.just("power")),
    ("train", "warmup_tokens"): st.one_of(
        st.booleans(), junk_text, st.just(math.nan), negative, st.just(10**12)
    ),
    ("train", "decay_fraction"): number(
        st.one_of(negative, st.floats(min_value=1, allow_nan=False, allow_infinity=False))
    ),
    ("train", "decay_shape"): st.one_of(junk_text, st.integers()),
    ("train", "weight_decay"): number(negative),
    ("train", "beta1"): number(st.one_of(negative, st.floats(min_value=1, allow_infinity=False))),
    ("train", "beta2"): number(st.one_of(negative, st.floats(min_value=1, allow_infinity=False))),
    ("train", "grad_clip"): number(negative),
    ("train", "seq_len"): integer(st.integers(max_value=0)).filter(lambda v: v is not None),
    ("train", "model_overrides"): st.one_of(
        not_a_list.filter(lambda v: v is not None),
        st.just({"n_layer": 1}),
        st.just({"n_layers": 0}),
        st.just({"n_layers": True}),
        st.just({"d_model": "wide"}),
        st.just({"n_kv_heads": 3}),
    ),
    ("train", "dtype"): st.one_of(junk_text, st.integers()),
    ("train", "divergence_factor"): number(st.floats(max_value=0.999, allow_nan=False, allow_infinity=False)),
    ("train", "data", "eval_tokens"): integer(st.integers(max_value=0)),
    ("train", "data", "source"): st.one_of(st.just(""), st.integers(), containers),
    ("run", "cpus_per_trial"): number(negative),
    ("run", "gpus_per_trial"): number(negative),
    ("run", "pack"): integer(st.integers(max_value=0)),
    ("run", "max_concurrent"): integer(st.integers(max_value=-1)),
    ("run", "max_retries"): integer(st.one_of(st.integers(max_value=-1), st.integers(min_value=101))),
    ("run", "checkpoint_every_steps"): integer(st.integers(max_value=-1)),
    ("run", "storage"): st.one_of(st.just(""), st.integers(), containers),
}
UNKNOWN = [("lrs",), ("search", "lrs"), ("train", "warmup"), ("run", "cpu"), ("train", "data", "path")]
REQUIRED = [("name",), ("search",)]

mutation = st.one_of(
    st.sampled_from(sorted(BAD)).flatmap(lambda path: st.tuples(st.just("set"), st.just(path), BAD[path])),
    st.tuples(st.just("set"), st.sampled_from(UNKNOWN), st.integers()),
    st.tuples(st.just("delete"), st.sampled_from(REQUIRED), st.none()),
)


def mutated(mutations) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(VALID))
    for action, path, value in mutations:
        node = spec
        for key in path[:-1]:
            node = node.setdefault(key, {}) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue  # an earlier mutation replaced a parent: the spec is invalid already
        if action == "delete":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    return spec


files = st.one_of(
    st.lists(mutation, min_size=1, max_size=3).map(lambda m: yaml.safe_dump(mutated(m)).encode()),
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
)


@pytest.fixture(scope="module", autouse=True)
def outcome_table():
    """The table of outcomes, printed after the module (visible with -s)."""
    yield
    print(f"\nspec fuzz outcomes: {dict(OUTCOMES)}")


@pytest.fixture(autouse=True)
def no_ray(monkeypatch):
    def refuse(settings):
        raise AssertionError("Ray was started for a spec that should have been refused")

    monkeypatch.setattr(execute, "init_ray", refuse)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=files)
def test_every_invalid_spec_is_one_line_and_exit_2_with_nothing_written(tmp_path, capsys, data):
    spec_file, storage = tmp_path / "spec.yaml", tmp_path / "store"
    spec_file.write_bytes(data)
    code = main(["submit", str(spec_file), "--storage", str(storage)])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    OUTCOMES["exit 2, one line" if code == 2 and len(lines) == 1 else f"exit {code}, {len(lines)} lines"] += 1
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert lines[0].startswith("powersweep submit: error: ") and len(lines[0]) <= 330
    assert not storage.exists()
