import json
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.proxy_models.schedules import (
    DECAY_SHAPES,
    PowerScheduler,
    ScheduleConfig,
    decay_factor,
    lr_lambda,
    power,
    power_lr,
    torch_scheduler,
    wsd,
)
from powersweep.proxy_models.shapes import ConfigError

shapes = st.sampled_from(DECAY_SHAPES)
fractions = st.floats(0.01, 0.5)
budgets = st.floats(1e6, 1e12)
floors = st.sampled_from([0.0, 0.1])


def test_paper_power_lr_value():
    """Sec. 4 values: batch 1024, a = 4, b = -0.51, lr_max = 0.02 at 1e12 tokens."""
    lr = power_lr(1e12, batch_size=1024, a=4.0, b=-0.51, lr_max=0.02)
    assert lr == 4096 * 1e12**-0.51
    assert lr == pytest.approx(3.1e-3, rel=0.02)


def test_paper_eq5_wsd_optimum_at_one_trillion_tokens():
    """Eq. 6 with the paper's fit (a = 4.6, b = -0.51): the formula gives 3.6e-3 at T = 1e12, batch 1024.

    The paper's text quotes 0.0011 for this case, which the formula itself does not give (0.0011 is its
    value near T = 1e13); we follow the formula.
    """
    assert 1024 * 4.6 * 1e12**-0.51 == pytest.approx(3.57e-3, rel=0.01)


def test_power_lr_is_capped_at_lr_max():
    assert power_lr(1.0, batch_size=1024, a=4.0, b=-0.51, lr_max=0.02) == 0.02
    assert power_lr(0.0, batch_size=1, a=4.0, b=-0.51, lr_max=0.02) == 0.02


@given(shapes, floors, st.floats(0, 1), st.floats(0, 1))
def test_decay_factor_is_monotone_from_one_to_floor(shape, floor, p, q):
    assert decay_factor(0.0, shape=shape, floor=floor) == pytest.approx(1.0)
    assert decay_factor(1.0, shape=shape, floor=floor) == pytest.approx(floor, abs=1e-12)
    lo, hi = sorted((p, q))
    assert decay_factor(hi, shape=shape, floor=floor) <= decay_factor(lo, shape=shape, floor=floor) + 1e-12


@given(budgets, fractions, shapes, floors, st.floats(0.001, 0.3))
def test_wsd_continuous_at_boundaries_and_never_above_peak(total, fraction, shape, floor, warmup_share):
    kw = dict(
        lr=0.01,
        total_tokens=total,
        warmup_tokens=warmup_share * total * (1 - fraction),
        decay_fraction=fraction,
        decay_shape=shape,
        decay_floor=floor,
    )
    warmup_end, decay_start = kw["warmup_tokens"], (1 - fraction) * total
    eps = total * fraction * 1e-12  # 1-sqrt has an infinite slope at the decay start
    for boundary in (warmup_end, decay_start):
        assert wsd(boundary - eps, **kw) == pytest.approx(wsd(boundary + eps, **kw), rel=1e-5)
    grid = [total * i / 500 for i in range(501)]
    lrs = [wsd(n, **kw) for n in grid]
    assert max(lrs) <= 0.01
    decay = [lr for n, lr in zip(grid, lrs) if n >= decay_start]
    assert all(a >= b - 1e-15 for a, b in zip(decay, decay[1:]))
    assert wsd(total, **kw) == pytest.approx(floor * 0.01, abs=1e-12)


@given(budgets, fractions, shapes, st.floats(0.001, 0.3), st.sampled_from([16, 128, 1024]))
def test_power_continuous_capped_and_decays_to_floor(total, fraction, shape, warmup_share, batch_size):
    kw = dict(
        batch_size=batch_size,
        a=4.0,
        b=-0.51,
        lr_max=0.02,
        total_tokens=total,
        warmup_tokens=warmup_share * total * (1 - fraction),
        decay_fraction=fraction,
        decay_shape=shape,
    )
    decay_start = (1 - fraction) * total
    eps = total * fraction * 1e-12  # 1-sqrt has an infinite slope at the decay start
    for boundary in (kw["warmup_tokens"], decay_start):
        assert power(boundary - eps, **kw) == pytest.approx(power(boundary + eps, **kw), rel=1e-5)
    grid = [total * i / 500 for i in range(501)]
    assert max(power(n, **kw) for n in grid) <= 0.02
    assert power(total, **kw) == pytest.approx(0.0, abs=1e-15)


@settings(max_examples=50)
@given(budgets, budgets, fractions, st.floats(0, 1))
def test_budget_independence_before_the_decay(t1, t2, fraction, position):
    """WSD and Power give the same lr for every budget before the earlier decay start; cosine does not."""
    n = position * (1 - fraction) * min(t1, t2)
    for name in ("wsd", "power"):
        s = ScheduleConfig(name=name, lr=0.01, decay_fraction=fraction, warmup_tokens=0.0)
        assert s.lr_at(n, total_tokens=t1, batch_size=64) == s.lr_at(n, total_tokens=t2, batch_size=64)
        assert s.fork_point(t1) == pytest.approx((1 - fraction) * t1)
    cosine = ScheduleConfig(name="cosine", lr=0.01)
    if abs(t1 - t2) > 0.01 * max(t1, t2) and 0.05 < position:
        assert cosine.lr_at(n, total_tokens=t1, batch_size=64) != cosine.lr_at(
            n, total_tokens=t2, batch_size=64
        )


def test_power_without_budget_has_no_decay():
    s = ScheduleConfig(name="power", decay_fraction=0.1)
    assert s.lr_at(1e9, total_tokens=None, batch_size=1024) == power_lr(
        1e9, batch_size=1024, a=4, b=-0.51, lr_max=0.02
    )


def test_torch_adapter_scales_each_group_by_its_multiplier():
    s = ScheduleConfig(name="wsd", lr=0.01, warmup_tokens=400)
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.25}])
    sched = torch_scheduler(opt, s, tokens_per_step=100, batch_size=1, total_tokens=2000)
    expected = lr_lambda(s, tokens_per_step=100, batch_size=1, total_tokens=2000)
    for step in range(20):
        assert opt.param_groups[0]["lr"] == pytest.approx(expected(step))
        assert opt.param_groups[1]["lr"] == pytest.approx(0.25 * expected(step))
        opt.step()
        sched.step()
    assert expected(0) == pytest.approx(0.01 * 100 / 400)  # the first step is not at lr 0


def params(n: int = 1) -> list:
    return [torch.nn.Parameter(torch.zeros(1)) for _ in range(n)]


def stepped(opt, sched, steps: int) -> list[list[float]]:
    """Each group's lr at optimizer steps 0 .. steps - 1, as the optimizer applied it."""
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return lrs


def test_power_scheduler_sets_the_lr_itself_and_follows_the_law_exactly():
    """An optimizer built with lr=3e-4 gets the law's lr, not 3e-4 times it; a group's lr_scale (muP's
    1 / m_width) multiplies it."""
    opt = torch.optim.AdamW([{"params": params()}, {"params": params(), "lr_scale": 0.25}], lr=3e-4)
    sched = PowerScheduler(opt, batch_size=8, seq_len=16, a=0.05, b=-0.51, lr_max=0.02)
    lrs = stepped(opt, sched, 50)
    for k, (lr, scaled) in enumerate(lrs):
        n = (k + 1) * 8 * 16
        assert lr == min(0.02, 8 * 0.05 * n**-0.51)
        assert scaled == 0.25 * lr
    assert lrs[0][0] == 0.02 > lrs[-1][0]  # capped at first, then the law


def test_power_scheduler_warms_up_linearly_to_the_law_then_follows_it():
    tokens_per_step, warmup = 4 * 32, 4 * 32 * 10
    opt = torch.optim.SGD(params(), lr=1.0)
    sched = PowerScheduler(opt, batch_size=4, seq_len=32, a=4.0, b=-0.51, lr_max=0.5, warmup_tokens=warmup)
    lrs = [lr for [lr] in stepped(opt, sched, 40)]
    peak = 4 * 4.0 * warmup**-0.51
    for k, lr in enumerate(lrs[:9]):
        assert lr == pytest.approx((k + 1) * tokens_per_step / warmup * peak, rel=1e-12)
    assert lrs[1] - lrs[0] == pytest.approx(lrs[8] - lrs[7], rel=1e-9)  # a straight line from 0
    assert max(lrs) == lrs[9] == pytest.approx(peak, rel=1e-12)  # the law's lr where warmup ends
    assert lrs[10:] == [min(0.5, 4 * 4.0 * ((k + 1) * tokens_per_step) ** -0.51) for k in range(10, 40)]


def test_power_scheduler_resumes_from_its_state_dict(tmp_path):
    kw = dict(batch_size=4, seq_len=8, a=4.6, b=-0.51, lr_max=0.02, warmup_tokens=320)
    opt = torch.optim.SGD(params(), lr=1.0)
    sched = PowerScheduler(opt, **kw)
    stepped(opt, sched, 7)
    torch.save(sched.state_dict(), tmp_path / "sched.pt")
    again = torch.optim.SGD(params(), lr=1.0)
    resumed = PowerScheduler(again, **kw)
    resumed.load_state_dict(torch.load(tmp_path / "sched.pt"))
    assert stepped(again, resumed, 5) == stepped(opt, sched, 5)


def test_power_scheduler_refuses_a_group_lr_it_would_replace():
    opt = torch.optim.SGD([{"params": params()}, {"params": params(), "lr": 0.25}], lr=1.0)
    with pytest.raises(ConfigError, match=r"param group 1 has lr=0.25 .* lr_scale=0.25") as error:
        PowerScheduler(opt, batch_size=4, seq_len=8, a=4.6, b=-0.51, lr_max=0.02)
    assert "\n" not in str(error.value)
    with pytest.raises(TypeError, match="lr_max"):
        PowerScheduler(torch.optim.SGD(params(), lr=1.0), batch_size=4, seq_len=8, a=4.6, b=-0.51)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"lr_max": None}, "lr_max=None"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"b": 0.5}, "power_b=0.5"),
        ({"warmup_tokens": -1}, "warmup_tokens=-1"),
        ({"warmup_tokens": 1000, "total_tokens": 1000, "decay_fraction": 0.5}, "warmup_tokens=1000"),
    ],
)
def test_power_scheduler_refuses_bad_settings_naming_field_and_value(kwargs, fragment):
    opt = torch.optim.SGD(params(), lr=1.0)
    with pytest.raises(ConfigError, match=fragment):
        PowerScheduler(opt, **{"batch_size": 4, "seq_len": 8, "a": 4.6, "b": -0.51, "lr_max": 0.02, **kwargs})


def test_power_scheduler_from_coefficients_takes_lr_max_from_the_file_or_the_caller(tmp_path):
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps({"a": 4.6, "b": -0.51, "lr_max": 0.001}))
    opt = torch.optim.SGD(params(), lr=1.0)
    sched = PowerScheduler.from_coefficients(str(path), opt, batch_size=1024, seq_len=4096)
    n = 11 * 1024 * 4096
    assert stepped(opt, sched, 11)[-1] == [min(0.001, 1024 * 4.6 * n**-0.51)] == [0.001]
    opt = torch.optim.SGD(params(), lr=1.0)
    sched = PowerScheduler.from_coefficients(str(path), opt, batch_size=1024, seq_len=4096, lr_max=0.02)
    assert stepped(opt, sched, 11)[-1] == [min(0.02, 1024 * 4.6 * n**-0.51)]


def test_coefficients_without_lr_max_need_one_from_the_caller(tmp_path):
    """No run of the sweep diverged: the file's lr_max is null, and no default stands in for it."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"a": 4.6, "b": -0.51, "lr_max": None}))
    opt = torch.optim.SGD(params(), lr=1.0)
    with pytest.raises(ConfigError, match=r"lr_max=None: .* pass lr_max=") as error:
        PowerScheduler.from_coefficients(str(path), opt, batch_size=1, seq_len=1)
    assert "\n" not in str(error.value)
    sched = PowerScheduler.from_coefficients(str(path), opt, batch_size=1, seq_len=1, lr_max=0.01)
    assert sched.get_last_lr() == [0.01]


def test_exported_coefficients_round_trip_into_a_scheduler(tmp_path):
    from powersweep.analysis.export import read_coefficients, write_coefficients
    from powersweep.analysis.pipeline import analyze
    from powersweep.analysis.synthetic import PlantedLaw, synthetic_table
    from powersweep.analysis.table import load_table

    result = analyze(load_table(synthetic_table(PlantedLaw(a=4.6, b=-0.51), seed=7)), n_boot=50, seed=0)
    path = write_coefficients(result, tmp_path / "coefficients.json")
    content = read_coefficients(path)
    assert content["lr_max"] is not None  # the synthetic sweep has divergences
    opt = torch.optim.AdamW(params(), lr=3e-4)
    sched = PowerScheduler.from_coefficients(str(path), opt, batch_size=256, seq_len=2048, warmup_tokens=1e7)
    assert (sched.schedule.power_a, sched.schedule.power_b) == (content["a"], content["b"])
    assert sched.schedule.lr_max == content["lr_max"]
    lrs = [lr for [lr] in stepped(opt, sched, 100)]
    for k in range(20, 100):  # warmup ends at step 19 (1e7 tokens / 524,288 per step)
        n = (k + 1) * 256 * 2048
        assert lrs[k] == min(content["lr_max"], 256 * content["a"] * n ** content["b"])


def test_coefficients_file_without_a_is_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    opt = torch.optim.SGD(params(), lr=1.0)
    with pytest.raises(ConfigError, match="lacks"):
        PowerScheduler.from_coefficients(str(path), opt, batch_size=1, seq_len=1)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"name": "linear"}, "schedule='linear'"),
        ({"decay_fraction": 1.5}, "decay_fraction=1.5"),
        ({"decay_shape": "step"}, "decay_shape='step'"),
        ({"lr": 0.0}, "lr=0.0"),
        ({"power_b": 0.5}, "power_b=0.5"),
    ],
)
def test_invalid_schedule_names_field_and_value(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ScheduleConfig(**kwargs)


def test_warmup_past_decay_start_is_rejected_for_the_budget():
    with pytest.raises(ConfigError, match="warmup_tokens=1000"):
        ScheduleConfig(name="wsd", warmup_tokens=1000, decay_fraction=0.5).validate(total_tokens=1500)
    assert math.isfinite(ScheduleConfig(name="wsd", warmup_tokens=10).peak_lr(batch_size=1))
