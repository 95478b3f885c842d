from pathlib import Path

import pytest
import yaml

from powersweep.sweeps.spec import SpecError, load_spec, parse_tokens, spec_from_dict

SPECS = sorted((Path(__file__).parents[2] / "sweeps" / "specs").glob("*.yaml"))
BASE = {"name": "t", "search": {"lr": [0.01, 0.02], "tokens": ["1M", "2M"]}}


def with_(**changes) -> dict:
    spec = yaml.safe_load(yaml.safe_dump(BASE))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = spec
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return spec


@pytest.mark.parametrize("text, tokens", [(2e6, 2e6), ("2e6", 2e6), ("500M", 5e8), ("2B", 2e9), ("1T", 1e12)])
def test_token_counts(text, tokens):
    assert parse_tokens(text) == tokens


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_load_and_round_trip(path):
    spec = load_spec(str(path))
    again = spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict())))
    assert again == spec and again.fingerprint == spec.fingerprint


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"search__lrs": [0.1]}, "unknown key 'search.lrs' in spec: did you mean 'lr'"),
        ({"search__lr": [0.01, -1]}, "search.lr[1]=-1: "),
        ({"search__lr": [0.01, 0.01]}, "repeats a value"),
        ({"search__batch_size": []}, "search.batch_size is empty"),
        ({"search__models": ["cpu-xxl"]}, "'cpu-xxl' is not a preset"),
        ({"train__warmup_tokens": "2M"}, "search.tokens=1e+06 leaves no stable phase"),
        ({"train__schedule": "power"}, "search.lr is for fixed-peak schedules"),
        ({"search__power_a": [4.0]}, "apply to schedule 'power'"),
        ({"train__decay_shape": "step"}, "train.decay_shape='step'"),
        ({"search__tokens": ["lots"]}, "not a token count"),
    ],
)
def test_bad_specs_name_field_value_and_fix(changes, fragment):
    with pytest.raises(SpecError) as error:
        spec_from_dict(with_(**changes))
    assert fragment in str(error.value)


def test_missing_file_and_bad_yaml_are_clear(tmp_path):
    with pytest.raises(SpecError, match="not found"):
        load_spec(str(tmp_path / "nope.yaml"))
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize(
    "search, fragment",
    [
        (
            {"a_range": [5, 3]},
            "search.a_range=[5, 3]: [5.0, 3.0] is not [low, high]: give the lower bound first",
        ),
        ({"a_range": [0, 2]}, "search.a_range=[0, 2]: [0.0, 2.0]: a must be positive"),
        ({"b_range": [-0.5, 0.1]}, "search.b_range=[-0.5, 0.1]: [-0.5, 0.1]: b must be negative"),
        ({"study_concurrency": 0}, "search.study_concurrency=0: 0 must be positive"),
    ],
)
def test_bad_optuna_search_names_field_value_and_fix(search, fragment):
    values = {
        "name": "t",
        "search": {"tokens": ["1M"], "mode": "optuna", **search},
        "train": {"schedule": "power"},
    }
    with pytest.raises(SpecError) as error:
        spec_from_dict(values)
    assert str(error.value).startswith(fragment)


def test_pack_with_a_mixture_of_experts_is_one_line_naming_run_pack():
    values = {
        "name": "p",
        "search": {"models": ["cpu-xs", "cpu-moe"], "lr": [0.01], "tokens": ["1M"]},
        "run": {"pack": 2},
    }
    with pytest.raises(SpecError) as err:
        spec_from_dict(values)
    message = str(err.value)
    assert (
        "run.pack=2" in message
        and "'cpu-moe'" in message
        and "run.pack: 1" in message
        and "\n" not in message
    )
    spec_from_dict({**values, "run": {"pack": 1}})  # the same spec unpacked is fine


@pytest.mark.parametrize(
    "search, schedule, fragment",
    [
        (
            {"lr": [0.01]},
            "wsd",
            "search.lr=[0.01] is for grid mode: adaptive mode starts from search.adaptive",
        ),
        ({}, "power", "search.mode=adaptive searches a peak lr: use train.schedule wsd, cosine or constant"),
        (
            {"adaptive": {"spacing": 3}},
            "wsd",
            "search.adaptive.spacing=3.0 is not a whole power of resolution=",
        ),
        ({"adaptive": {"spacing": 0.5}}, "cosine", "search.adaptive.spacing=0.5 is not a whole power"),
        (
            {"adaptive": {"lr_range": [0.01, 0.001]}},
            "wsd",
            "search.adaptive.lr_range=[0.01, 0.001]: [0.01, 0.001] is not [low, high]",
        ),
        (
            {"adaptive": {"resolution": 1.01}},
            "wsd",
            "search.adaptive.resolution=1.01: 1.01 must be a ratio between",
        ),
        (
            {"adaptive": {"max_lineages": 7.5, "spacing": 1.4142135623730951}},
            "wsd",
            "search.adaptive.max_lineages=7.5 is less than the 14 lrs of the first round: raise it or "
            "narrow lr_range",
        ),
        (
            {"adaptive": {"max_lineages": 6}},
            "wsd",
            "search.adaptive.max_lineages=6.0 cannot hold the 7 lineages that "
            "bracket the largest budget's optimum with side_points=3 lrs",
        ),
        (
            {"adaptive": {"max_lineages": 3, "side_points": 1}},
            "wsd",
            "search.adaptive.max_lineages=3.0 is less than the 7 lrs of the first round",
        ),
        (
            {"adaptive": {"max_rounds": 0}},
            "constant",
            "search.adaptive.max_rounds=0: Input should be greater than",
        ),
        (
            {"adaptive": {"spacng": 2}},
            "wsd",
            "unknown key 'search.adaptive.spacng' in spec: did you mean 'spacing'?",
        ),
    ],
)
def test_bad_adaptive_search_names_field_value_and_fix(search, schedule, fragment):
    values = {
        "name": "t",
        "search": {"tokens": ["1M"], "mode": "adaptive", **search},
        "train": {"schedule": schedule},
    }
    with pytest.raises(SpecError) as error:
        spec_from_dict(values)
    assert str(error.value).startswith(fragment), str(error.value)


def test_adaptive_defaults_start_at_2x_and_end_at_half_an_octave():
    spec = spec_from_dict({"name": "t", "search": {"tokens": ["1M"], "mode": "adaptive"}})
    adaptive = spec.search.adaptive
    assert adaptive.resolution == pytest.approx(2**0.5)
    assert adaptive.spacing_steps == 2 and len(adaptive.start_lrs) == 7  # 1e-4 .. 6.4e-3 at 2x
    assert adaptive.start_lrs[-1] == pytest.approx(6.4e-3)


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"search__seeds": [-1]}, "search.seeds[0]=-1: -1 must be a seed of at least 0"),
        ({"search__batch_size": [True]}, "search.batch_size[0]=True: True is not an integer"),
        ({"search__batch_size": [4.0]}, "search.batch_size[0]=4.0: 4.0 is not an integer"),
        ({"search__lr": [float("nan")]}, "search.lr[0]=nan: nan is not a finite number"),
        ({"search__lr": [True]}, "search.lr[0]=True: True is a boolean, not a number"),
        (
            {"search__tokens": [1e30]},
            "search.tokens[0]=1e+30: 1e+30 must be a token count of at least 1 and at most",
        ),
        ({"search__tokens": ["1e400"]}, "search.tokens[0]='1e400': inf is not a finite number"),
        ({"train__beta1": 2}, "train.beta1=2: 2.0 must be a fraction of at least 0 and below 1"),
        ({"train__beta2": 1.0}, "train.beta2=1.0: 1.0 must be a fraction"),
        ({"train__grad_clip": -1}, "train.grad_clip=-1: -1.0 must be a number of at least 0"),
        ({"train__weight_decay": -1}, "train.weight_decay=-1"),
        (
            {"train__decay_fraction": 1},
            "train.decay_fraction=1: 1.0 must be a fraction of at least 0 and below 1",
        ),
        ({"train__seq_len": -64}, "train.seq_len=-64: -64 must be positive"),
        (
            {"train__model_overrides": {"n_layer": 2}},
            "unknown model field 'n_layer': did you mean 'n_layers'?",
        ),
        ({"train__model_overrides": {"n_layers": True}}, "True is not an integer"),
        ({"train__model_overrides": {"n_kv_heads": 3}}, "train.model_overrides on 'cpu-xs': n_kv_heads=3"),
        ({"train__dtype": "fp8"}, "train.dtype='fp8'"),
        ({"train__eps": 0}, "train.eps=0: 0.0 must be positive"),
        ({"run__max_retries": -1}, "run.max_retries=-1: -1 must be a retry count of at least 0"),
        ({"run__max_concurrent": -1}, "run.max_concurrent=-1"),
        ({"run__cpus_per_trial": -1}, "run.cpus_per_trial=-1"),
        ({"run__gpus_per_trial": float("inf")}, "run.gpus_per_trial=inf"),
        ({"run__curves": 1}, "run.curves=1: 1 is not a boolean: write true or false"),
        ({"run__curves": "no"}, "run.curves='no': 'no' is not a boolean: write true or false"),
        ({"name": "x" * 300}, "use 1 to 100 letters"),
        ({"name": "x.parquet"}, "a name ending in '.parquet'"),
        ({"search__tokens": [100]}, "is less than one optimizer step"),
        (
            {"search__lr": [i / 1e6 + 1e-3 for i in range(250_000)]},
            "expands to 500,000 runs, more than 200,000",
        ),
    ],
)
def test_every_field_is_checked_for_type_and_range(changes, fragment):
    with pytest.raises(SpecError) as error:
        spec_from_dict(with_(**changes))
    message = str(error.value)
    assert fragment in message and "\n" not in message and len(message) <= 300


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("name: a\nname: b\nsearch: {lr: [0.01], tokens: [1M]}\n", "key 'name' is given twice"),
        ("name: t\nsearch: " + "[" * 100_000 + "]" * 100_000 + "\n", "nests deeper than 32 levels"),
        (
            "name: t\nsearch: {lr: [0.01], tokens: [1M]}\ntrain: {model_overrides: "
            + "{a: " * 40
            + "1"
            + "}" * 40
            + "}\n",
            "nests deeper than 32 levels",
        ),
        (
            "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
            + "".join(
                f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
                for p, c in zip("abcdefgh", "bcdefghi")
            ),
            "expands to more than 200,000 values",
        ),
        ("name: t\nsearch: {lr: [.nan], tokens: [1M]}\n", "search.lr[0]=nan"),
        ("name: t\nsearch: {lr: [0.01], tokens: [.inf]}\n", "search.tokens[0]=inf"),
        ("[1, 2]\n", "must hold a mapping"),
    ],
)
def test_yaml_that_is_too_deep_too_large_or_repeats_a_key_is_refused_before_it_is_built(
    tmp_path, text, fragment
):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as error:
        load_spec(str(path))
    message = str(error.value)
    assert fragment in message and "\n" not in message and len(message) <= 300


def test_binary_files_directories_and_huge_files_are_one_line(tmp_path):
    (tmp_path / "binary.yaml").write_bytes(bytes(range(256)) * 4)
    (tmp_path / "huge.yaml").write_text("# padding\n" * 200_000)
    for path, fragment in [
        (tmp_path / "binary.yaml", "binary"),
        (tmp_path, "is a directory"),
        (tmp_path / "huge.yaml", "more than 1,000,000"),
    ]:
        with pytest.raises(SpecError, match=fragment):
            load_spec(str(path))


def test_planned_runs_counts_the_grid_without_expanding_it():
    spec = spec_from_dict(with_(search__seeds=[0, 1], search__batch_size=[4, 8, 16]))
    assert spec.planned_runs == 2 * 2 * 3 * 2  # lr x tokens x batch sizes x seeds


def test_pack_and_gpus_per_trial_take_auto_and_gpu_memory_a_size():
    values = {"name": "g", "search": {"lr": [0.01], "tokens": ["1M"]}}
    run = spec_from_dict(
        {**values, "run": {"pack": "auto", "gpus_per_trial": "auto", "gpu_memory": "80GiB"}}
    ).run
    assert run.pack == "auto" and run.gpus_per_trial == "auto" and run.uses_gpu
    for field, value, fragment in (
        ("pack", "max", "run.pack='max'"),
        ("gpus_per_trial", "all", "run.gpus_per_trial"),
        ("gpu_memory", "lots", "run.gpu_memory='lots'"),
    ):
        with pytest.raises(SpecError) as error:
            spec_from_dict({**values, "run": {field: value}})
        assert str(error.value).startswith(fragment) and "\n" not in str(error.value)


def test_a_train_setting_reaches_every_runs_config_by_its_name():
    from powersweep.sweeps.plan import plan

    spec = spec_from_dict(with_(train__eps="1e-6", train__weight_decay=0, run__compile=False))
    configs = [job.config for job in plan(spec).jobs]
    assert {(c.eps, c.weight_decay, c.compile) for c in configs} == {(1e-6, 0.0, False)}
    assert spec_from_dict(with_()).train.eps == configs[0].__class__().eps  # the default is the trainer's


def test_run_compile_takes_auto_or_a_boolean_and_refuses_anything_else_in_one_line():
    assert spec_from_dict(BASE).run.compile == "auto"
    for value in ("auto", True, False):
        assert spec_from_dict(with_(run__compile=value)).run.compile is value or value == "auto"
    for value in (1, "yes", "on", None):
        with pytest.raises(SpecError) as error:
            spec_from_dict(with_(run__compile=value))
        message = str(error.value)
        assert message.startswith(f"run.compile={value!r}") and "auto" in message and "\n" not in message
    assert spec_from_dict(BASE).run.compile_mode == "auto"
    assert spec_from_dict(with_(run__compile_mode="reduce-overhead")).run.compile_mode == "reduce-overhead"
    with pytest.raises(SpecError) as error:
        spec_from_dict(with_(run__compile_mode="cudagraphs"))
    assert str(error.value).startswith("run.compile_mode='cudagraphs'") and "reduce-overhead" in str(
        error.value
    )
    assert spec_from_dict(BASE).run.compile_scope == "auto"
    with pytest.raises(SpecError) as error:
        spec_from_dict(with_(run__compile_scope="model"))
    assert str(error.value).startswith("run.compile_scope='model'") and "trunk" in str(error.value)


def test_run_curves_is_on_by_default_and_a_yaml_boolean_turns_it_off(tmp_path):
    assert spec_from_dict(with_()).run.curves is True
    path = tmp_path / "off.yaml"
    path.write_text(yaml.safe_dump(with_()) + "run: {curves: false}\n")
    spec = load_spec(str(path))
    assert spec.run.curves is False
    assert spec_from_dict(spec.model_dump(mode="json")).run.curves is False  # the stored spec keeps it
