"""The adaptive lr search policy on synthetic loss surfaces: brackets found, divergence, budgets, replay."""

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.analysis import analyze
from powersweep.sweeps.adaptive import (
    Policy,
    brackets,
    first_round,
    lr_value,
    next_round,
    predicted,
    replay,
    wanted,
)

BUDGETS = (1e6, 2e6, 4e6, 8e6, 16e6)
DECAY = 0.2


def lineage_tokens(budgets=BUDGETS) -> dict[float, float]:
    """Tokens of a WSD lineage through every budget up to T: the trunk to its decay, plus each branch."""
    return {t: (1 - DECAY) * t + DECAY * sum(b for b in budgets if b <= t) for t in budgets}


def surface(lr_opt, *, low=0.05, high=0.08, diverge=None, noise=0.0, seed=0):
    """loss(lr, T): an asymmetric bowl in ln lr around lr_opt(T), optional noise and a divergence edge."""
    rng, draws = np.random.default_rng(seed), {}

    def loss(lr: float, tokens: float) -> float:
        if diverge is not None and lr >= diverge(tokens):
            return math.inf
        x = math.log(lr / lr_opt(tokens))
        draws.setdefault((lr, tokens), rng.normal(0.0, noise) if noise else 0.0)
        return 3.0 + (high if x > 0 else low) * x * x + draws[(lr, tokens)]

    return loss


def search(loss, policy, budgets=BUDGETS):
    return replay(lambda k, t: loss(lr_value(policy, k), t), policy, budgets, lineage_tokens(budgets))


def assert_bracketed(state, policy, budgets=BUDGETS):
    """Every budget: the argmin of the trained lrs has a trained neighbour one resolution step away on each
    side, and nothing more is wanted."""
    assert state.reason == "bracketed", state.reason
    for b in brackets(state, policy, budgets):
        assert b.bracketed and b.lr_below is not None and b.lr_above is not None
        assert b.lr_below < b.lr_best < b.lr_above
        assert b.lr_best / b.lr_below == pytest.approx(policy.resolution, rel=0.02)


def law(tokens):
    """lr_opt falls with T as a power law: gamma = a * T^b with b = -0.5."""
    return 4e-3 * (tokens / 1e6) ** -0.5


POLICY = Policy(anchor=1e-4, resolution=2**0.25, spacing_steps=8, start=(0, 8, 16, 24), max_lineages=16)


def test_interior_optimum_is_bracketed_at_the_resolution_with_a_fraction_of_the_grid():
    loss = surface(law)
    state = search(loss, POLICY)
    assert_bracketed(state, POLICY)
    for b in brackets(state, POLICY, BUDGETS):  # noiseless: the argmin is the lattice point nearest lr_opt
        assert abs(math.log(b.lr_best / law(b.tokens))) <= math.log(POLICY.resolution) / 2 + 0.01
    full = lineage_tokens()[BUDGETS[-1]]
    used = sum(lineage_tokens()[t] for t in state.requested.values())
    assert used < 0.4 * 25 * full  # the grid at the final resolution over the same range: 25 lineages


def test_first_round_reaches_the_smallest_budget_only():
    assert next_round({}, {}, POLICY, BUDGETS, lineage_tokens()) == (
        {k: 1e6 for k in POLICY.start},
        "first round",
    )
    assert first_round(POLICY, BUDGETS[::-1]) == {k: 1e6 for k in POLICY.start}


@pytest.mark.parametrize("side", [2, 3])
def test_lineages_reach_the_largest_budget_only_inside_its_window(side):
    """The expensive lineages are the largest budget's: on a noiseless law, exactly its argmin and side_points
    lattice points on each side reach it, and every lr stops at a budget whose window it is in."""
    policy = dataclasses.replace(POLICY, side_points=side)
    state = search(surface(law), policy)
    argmins = {
        t: min((k for (k, bt) in state.observed if bt == t), key=lambda k: state.observed[(k, t)])
        for t in BUDGETS
    }
    best = argmins[BUDGETS[-1]]
    reaching = sorted(k for k, t in state.requested.items() if t == BUDGETS[-1])
    assert reaching == list(range(best - side, best + side + 1))
    for k, t in state.requested.items():
        if t > BUDGETS[1]:  # the second budget starts from one budget's argmin: no trend to follow yet
            assert abs(k - argmins[t]) <= side


def test_a_budget_starts_at_the_optimum_extrapolated_from_the_budgets_below():
    history = [(1e6, 20), (2e6, 18), (4e6, 16)]  # lr_opt falls 2 lattice steps per doubling of T
    assert set(predicted(history, 8e6, math.inf)) == {12, 13, 14, 15, 16}
    assert set(predicted(history, 16e6, math.inf)) == {10, 11, 12, 13, 14}  # two doublings ahead
    assert set(predicted(history[:1], 2e6, math.inf)) == {18, 19, 20, 21, 22}  # one budget: no trend, flat
    assert set(predicted(history, 8e6, 15)) == {12, 13, 14}  # nothing at or above a diverged lr
    assert {k for k, r in predicted(history, 8e6, math.inf).items() if r == 1} == {13, 14, 15}


def test_edge_optimum_extends_the_range_in_coarse_steps():
    low_law = lambda tokens: 2e-5 * (tokens / 1e6) ** -0.3  # noqa: E731  below the first round's lowest lr
    state = search(surface(low_law), POLICY)
    assert_bracketed(state, POLICY)
    second = state.rounds[1]
    assert min(second) == -POLICY.spacing_steps  # one coarse step below the edge, not one fine step
    assert min(b.lr_best for b in brackets(state, POLICY, BUDGETS)) < 1e-4


def test_divergence_bounds_the_range_from_above():
    # lr_opt sits just under the divergence edge: the lr next above the argmin diverges
    diverge = lambda tokens: law(tokens) * 1.1  # noqa: E731
    loss = surface(law, diverge=diverge)
    state = search(loss, POLICY)
    assert state.reason == "bracketed"
    result = brackets(state, POLICY, BUDGETS)
    assert any(b.above_diverged for b in result)
    for b in result:
        assert b.bracketed and b.lr_best < diverge(b.tokens)
        if b.above_diverged:
            assert b.lr_above / b.lr_best == pytest.approx(POLICY.resolution, rel=0.02)
    # no lr is trained more than one coarse step above the edge: bisection, not extension, once one diverged
    edge = max(diverge(t) for t in BUDGETS)
    assert max(lr_value(POLICY, k) for k in state.requested) < edge * 2**1.01
    for (k, t), value in state.observed.items():  # a diverged lr closes the range above it at larger budgets
        if not math.isfinite(value):
            assert all(top <= t for k2, top in state.requested.items() if k2 >= k)


def test_flat_bowl_with_noise_ends_within_the_lineage_budget():
    policy = Policy(anchor=1e-4, resolution=2**0.25, spacing_steps=8, start=(0, 8, 16, 24), max_lineages=9)
    loss = surface(law, low=1e-5, high=1e-5, noise=0.002, seed=3)  # noise far above the bowl's depth
    state = search(loss, policy)
    assert state.reason in ("bracketed", "lineage budget spent", "max rounds")
    used = sum(lineage_tokens()[t] for t in state.requested.values())
    assert used <= policy.max_lineages * lineage_tokens()[BUDGETS[-1]] * (1 + 1e-9)
    assert len(state.rounds) <= policy.max_rounds


def test_everything_diverged_goes_lower():
    policy = Policy(anchor=1e-3, resolution=2, spacing_steps=2, start=(0, 2), max_lineages=6)
    assert wanted({0: math.inf, 2: math.inf}, policy) == {-2: 1}


def test_a_round_cut_to_the_lineage_budget_keeps_the_argmin_neighbours_first():
    policy = Policy(anchor=1e-3, resolution=2, spacing_steps=2, start=(0, 2, 4), max_lineages=4)
    tokens = lineage_tokens()
    observed = {(k, t): 3 + 0.1 * (k - 2) ** 2 for k in (0, 2, 4) for t in BUDGETS}
    round_, reason = next_round(observed, {0: 16e6, 2: 16e6, 4: 16e6}, policy, BUDGETS, tokens)
    assert reason.startswith("next round (cut") and len(round_) == 1 and set(round_) <= {1, 3}


@settings(max_examples=40, deadline=None)
@given(
    st.floats(-2.0, 2.0), st.floats(-0.7, -0.1), st.floats(0.01, 0.2), st.floats(1.0, 3.0), st.integers(0, 99)
)
def test_noiseless_bowls_are_always_bracketed_around_the_true_optimum(log_shift, b, low, ratio, seed):
    """Any interior power law and asymmetry: the search brackets every budget, and its argmin is the argmin of
    the full grid at the final resolution (the same lattice, over a wider range)."""
    true = lambda tokens: 1e-3 * math.exp(log_shift) * (tokens / 1e6) ** b  # noqa: E731
    loss = surface(true, low=low, high=low * ratio)
    state = search(loss, POLICY)
    assert_bracketed(state, POLICY)
    for br in brackets(state, POLICY, BUDGETS):
        grid_best = min(range(-16, 48), key=lambda k: loss(lr_value(POLICY, k), br.tokens))
        assert br.lr_best == lr_value(POLICY, grid_best)


def test_replay_recomputes_a_round_in_progress_from_the_rounds_before_it():
    """A store holding any part of a round gives the same pending round and, once filled, the same search."""
    loss = surface(law, noise=0.003, seed=7)
    full = search(loss, POLICY)
    assert len(full.rounds) >= 3
    done_cells = {(k, t) for r in full.rounds[:2] for k, top in r.items() for t in BUDGETS if t <= top}
    in_progress = [(k, t) for k, top in full.rounds[2].items() for t in BUDGETS if t <= top]
    for cut in range(len(in_progress)):
        stored = done_cells | set(in_progress[:cut])
        partial = replay(
            lambda k, t, stored=stored: loss(lr_value(POLICY, k), t) if (k, t) in stored else None,
            POLICY,
            BUDGETS,
            lineage_tokens(),
        )
        assert partial.rounds == full.rounds[:2] and partial.pending == full.rounds[2]


def test_lattice_values_match_a_sqrt2_grid():
    policy = Policy(anchor=2.5e-4, resolution=2**0.5, spacing_steps=2, start=(0, 2, 4, 6), max_lineages=8)
    assert [lr_value(policy, k) for k in range(-1, 7)] == [
        0.000177,
        0.00025,
        0.000354,
        0.0005,
        0.000707,
        0.001,
        0.00141,
        0.002,
    ]  # the main job's grid


def _rows(loss, policy, cells):
    """Result rows of `cells` (lattice index, budget) as the analysis reads them."""
    out = []
    for k, tokens in cells:
        lr = lr_value(policy, k)
        value = loss(lr, tokens)
        out.append(
            {
                "model": "m",
                "n_params": 10**6,
                "tokens": tokens,
                "batch_size": 8,
                "lr": lr,
                "schedule": "wsd",
                "loss_eval": value if math.isfinite(value) else np.nan,
                "status": "ok" if math.isfinite(value) else "diverged",
            }
        )
    return pd.DataFrame(out)


@settings(max_examples=15, deadline=None)
@given(
    st.floats(-1.0, 1.0),
    st.floats(-0.7, -0.2),
    st.floats(0.02, 0.08),
    st.floats(1.0, 3.0),
    st.floats(0.0005, 0.002),
    st.floats(1.5, 6.0),
    st.integers(0, 99),
)
def test_noisy_surfaces_give_the_grids_lr_opt_at_every_budget(log_shift, b, low, ratio, noise, edge, seed):
    """Noise, asymmetry and a divergence edge: the analysis finds the same lr_opt in the adaptive rows as in a
    full grid at the final resolution (one wide enough that no budget's window reaches its ends)."""
    true = lambda tokens: 1e-3 * math.exp(log_shift) * (tokens / 1e6) ** b  # noqa: E731
    loss = surface(true, low=low, high=low * ratio, noise=noise, seed=seed, diverge=lambda t: edge * true(t))
    state = search(loss, POLICY)
    assert state.reason == "bracketed"
    adaptive = [(k, t) for k, top in state.requested.items() for t in BUDGETS if t <= top]
    grid = [(k, t) for k in range(-20, 52) for t in BUDGETS]
    cells = {
        name: analyze(_rows(loss, POLICY, c), n_boot=0, seed=0).cells.set_index("tokens")
        for name, c in (("grid", grid), ("adaptive", adaptive))
    }
    for t in BUDGETS:
        assert cells["adaptive"].loc[t, "lr_opt"] == pytest.approx(cells["grid"].loc[t, "lr_opt"], rel=1e-9)
        assert cells["adaptive"].loc[t, "ok"] == cells["grid"].loc[t, "ok"]
