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


def test_power_scheduler_from_coefficients(tmp_path):
    path = tmp_path / "coefficients.json"
    path.write_text(json.dumps({"a": 4.6, "b": -0.51, "lr_max": 0.02}))
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = PowerScheduler.from_coefficients(str(path), opt, batch_size=1024, seq_len=4096)
    for _ in range(10):
        opt.step()
        sched.step()
    n = 11 * 1024 * 4096
    assert opt.param_groups[0]["lr"] == pytest.approx(min(0.02, 1024 * 4.6 * n**-0.51))


def test_coefficients_file_without_a_is_a_clear_error(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("{}")
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
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
