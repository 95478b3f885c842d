"""Token budgets (and batch sizes converted from tokens) that differ by rounding are one cell."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.merge import tolerance_groups
from powersweep.analysis.optimum import lr_points
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.report import write_report
from powersweep.analysis.synthetic import PlantedLaw, synthetic_table
from powersweep.analysis.table import load_table

# The budgets of a public MoE sweep merged from two sweep versions (0.03% apart), and two more of its grid.
V1_TOKENS = (1.983906e9, 4e9, 9.701425e9, 32e9)
V2_TOKENS = {1.983906e9: 1.98443e9, 4e9: 4.0012e9, 9.701425e9: 9.701949e9, 32e9: 32.0096e9}
CELL_VALUES = ["lr_opt", "lr_opt_se", "loss_opt", "n_runs", "flags", "gamma", "used"]


def _analysed(table: pd.DataFrame, **options):
    return analyze(
        load_table(table, tokens_tolerance=options.get("tokens_tolerance", 0.01)), n_boot=50, **options
    )


def _two_versions(grid) -> pd.DataFrame:
    """Version 1 runs every lr; version 2 (other noise, budgets 0.03% off) repeats 10 of them."""
    v1 = synthetic_table(PlantedLaw(), grid, seed=0, sweep_id="v1")
    v2 = synthetic_table(PlantedLaw(), grid, seed=1, sweep_id="v2")
    v2 = v2[v2["lr"].isin(grid.lrs[5:15])].assign(tokens=lambda f: f["tokens"].map(V2_TOKENS))
    return pd.concat([v1, v2], ignore_index=True)


def test_groups_form_from_the_smallest_value_and_never_span_more_than_the_tolerance():
    assert tolerance_groups([1.98443e9, 1.983906e9, 4e9], 0.01) == [(1.983906e9, 1.98443e9), (4e9,)]
    # 100 ~ 100.6 ~ 101.2 neighbour by neighbour, but the chain spans 1.2%: it splits from the smallest.
    assert tolerance_groups([101.2, 100.6, 100.0], 0.01) == [(100.0, 100.6), (101.2,)]
    assert tolerance_groups([100.0, 100.5, 101.0], 0.01) == [(100.0, 100.5, 101.0)]
    assert tolerance_groups([100.0, 100.5, 100.5], 0.0) == [(100.0,), (100.5,)]


def test_budgets_jittered_around_their_nominal_give_the_unjittered_cells_and_law_exactly(one_model_grid):
    grid = one_model_grid()
    exact = synthetic_table(PlantedLaw(), grid, seed=3)
    # Each cell's runs at T * (1 - 0.25%), T and T * (1 + 0.25%) (a 0.5% spread): their median is T itself.
    jitter = np.array([0.9975, 1.0, 1.0025])[np.arange(len(exact)) % 3]
    jittered = _analysed(exact.assign(tokens=exact["tokens"] * jitter))
    plain = _analysed(exact)
    pd.testing.assert_frame_equal(
        jittered.cells[["model", "tokens", "batch_size", *CELL_VALUES]],
        plain.cells[["model", "tokens", "batch_size", *CELL_VALUES]],
    )
    assert (jittered.gamma.pooled.a, jittered.gamma.pooled.b) == (plain.gamma.pooled.a, plain.gamma.pooled.b)
    assert np.array_equal(jittered.table["tokens_reported"], exact["tokens"] * jitter)  # nothing lost


def test_budgets_jittered_at_random_move_the_law_by_less_than_the_jitter(one_model_grid):
    grid = one_model_grid()
    exact = synthetic_table(PlantedLaw(), grid, seed=3)
    jitter = 1 + np.random.default_rng(0).uniform(0, 0.005, len(exact))  # up to 0.5% per run
    jittered = _analysed(exact.assign(tokens=exact["tokens"] * jitter))
    plain = _analysed(exact)
    assert len(jittered.cells) == len(plain.cells)
    # Same runs per cell and lr, so the same lr_opt; only ln T moves, by 0 to 0.005 per cell. The slope then
    # moves by at most about |b| * sd(shift) / sd(ln T) (shift sd <= 0.0025, sd(ln T) = 1.55 here: 0.16% of
    # b), and the law at its pivot T by |b| * 0.005 (0.26%). a alone is gamma at T = 1 token, 22 e-folds below
    # the data, where the slope's change is multiplied by ln T_pivot: it is checked through that relation.
    shift_sd, spread = 0.0025, float(np.std(np.log(plain.cells["tokens"])))
    b0, b1 = plain.gamma.pooled.b, jittered.gamma.pooled.b
    assert abs(b1 - b0) <= abs(b0) * shift_sd / spread
    pivot = plain.gamma.pooled.x_ref
    assert (
        abs(math.log(jittered.gamma.pooled.predict(pivot) / plain.gamma.pooled.predict(pivot)))
        <= abs(b0) * 0.005
    )
    ln_a_moved = abs(math.log(jittered.gamma.pooled.a / plain.gamma.pooled.a))
    assert ln_a_moved <= abs(b1 - b0) * math.log(pivot) + abs(b0) * 0.005


@pytest.mark.parametrize(
    "batch_sizes, where",
    [
        ((64,), "(model 36M, batch 64) analysed as one cell at 1.984168e9"),
        (
            (32, 64, 128, 256),
            "(model 36M, batch sizes 32, 64, 128 and 256) analysed as one budget at 1.984168e9",
        ),
    ],
)
def test_two_sweep_versions_give_one_cell_per_nominal_budget(one_model_grid, tmp_path, batch_sizes, where):
    grid = one_model_grid(tokens=V1_TOKENS, batch_sizes=batch_sizes)
    table = _two_versions(grid)
    result = _analysed(table)
    assert len(result.cells) == len(grid.tokens) * len(grid.batch_sizes)
    assert result.cells["n_runs"].eq(len(grid.lrs) + 10).all()  # the 10 repeated lrs count twice
    points = lr_points(result.table)
    assert points.loc[points["lr"].isin(grid.lrs[5:15]), "n_runs"].eq(2).all()
    assert points.loc[~points["lr"].isin(grid.lrs[5:15]), "n_runs"].eq(1).all()
    assert f"tokens 1.983906e9 and 1.98443e9 {where}" in " | ".join(result.notes)
    repeats = [n for n in result.notes if "averaged as seeds" in n]
    n_points = 10 * len(result.cells)
    assert len(repeats) == 1 and repeats[0].startswith(f"{2 * n_points} runs at {n_points} (cell, lr) points")
    write_report(table, tmp_path, result=result, figures=False)
    cells = pd.read_csv(tmp_path / "cells.csv")
    assert sorted(set(cells["tokens"])) == [
        1.984168e9,
        (4e9 + 4.0012e9) / 2,
        (9.701425e9 + 9.701949e9) / 2,
        (32e9 + 32.0096e9) / 2,
    ]
    assert set(result.table["tokens_reported"]) == set(V1_TOKENS) | set(V2_TOKENS.values())


def test_tolerance_zero_keeps_the_versions_apart(one_model_grid):
    grid = one_model_grid(tokens=V1_TOKENS)
    result = _analysed(_two_versions(grid), tokens_tolerance=0)
    assert len(result.cells) == 2 * len(grid.tokens) * len(grid.batch_sizes)
    assert not [n for n in result.notes if "analysed as one" in n or "averaged as seeds" in n]


def test_an_exact_table_gives_the_same_output_with_and_without_a_tolerance(one_model_grid, tmp_path):
    table = synthetic_table(PlantedLaw(), one_model_grid(n_seeds=2), seed=5)
    merged, apart = _analysed(table), _analysed(table, tokens_tolerance=0)
    pd.testing.assert_frame_equal(
        merged.cells.drop(columns="ln_lr_opt_draws"), apart.cells.drop(columns="ln_lr_opt_draws")
    )
    assert merged.notes == apart.notes
    for out, result in (("merged", merged), ("apart", apart)):
        write_report(table, tmp_path / out, result=result, figures=False)
    for name in ("cells.csv", "coefficients.json"):
        first, second = ((tmp_path / d / name).read_text() for d in ("merged", "apart"))
        if name.endswith(".json"):  # the date of the analysis is the one field that may differ
            first, second = (
                {**json.loads(t), "provenance": {**json.loads(t)["provenance"], "date": ""}}
                for t in (first, second)
            )
        assert first == second


@pytest.mark.parametrize("value", [-0.1, float("nan"), 1.0])
def test_a_bad_tolerance_is_refused_in_one_line(value):
    table = synthetic_table(PlantedLaw())
    with pytest.raises(AnalysisError, match=r"^--tokens-tolerance .*: must be") as caught:
        analyze(table, tokens_tolerance=value)
    with pytest.raises(AnalysisError, match=r"^--tokens-tolerance "):
        load_table(table, tokens_tolerance=value)
    if value == -0.1:
        assert str(caught.value) == "--tokens-tolerance -0.1: must be >= 0 (a relative difference, e.g. 0.01)"


def test_batch_sizes_converted_from_tokens_merge_within_the_tolerance():
    # One export wrote the batch as 262144 tokens, the other rounded it to 261900: 63.94 sequences of 4096.
    lrs = np.geomspace(1e-3, 3e-2, 7)
    bowl = np.log(lrs / 0.006) ** 2
    frame = pd.DataFrame(
        {
            "model": "36M",
            "tokens": 2e9,
            "lr": np.r_[lrs, lrs],
            "batch_size": [262144] * 7 + [261900] * 7,
            "loss_eval": np.r_[3 + bowl, 3.001 + bowl],
        }
    )
    table = load_table(frame, batch_unit="tokens", seq_len=4096)
    assert table["batch_size"].eq(64).all()
    result = analyze(table, n_boot=0)
    assert len(result.cells) == 1 and result.cells["n_runs"].iloc[0] == 14
    assert (
        "batch sizes 63.94043 and 64 sequences (model 36M; batch_size in tokens / seq_len) analysed as one "
        "batch size of 64 sequences"
    ) in " | ".join(result.notes)
    with pytest.raises(AnalysisError, match="not a whole number of sequences"):
        load_table(frame, batch_unit="tokens", seq_len=4096, tokens_tolerance=0)


@pytest.mark.parametrize("tolerance, cells_per_budget", [(None, 1), ("0", 2)])
def test_the_command_merges_by_its_tolerance_option(
    one_model_grid, tmp_path, capsys, tolerance, cells_per_budget
):
    from powersweep.cli import main

    grid = one_model_grid(tokens=V1_TOKENS)
    path = tmp_path / "two-versions.csv"
    _two_versions(grid).to_csv(path, index=False)
    option = [] if tolerance is None else ["--tokens-tolerance", tolerance]
    main(["analyze", str(path), "--out", str(tmp_path / "out"), "--no-figures", "--bootstrap", "0", *option])
    cells = pd.read_csv(tmp_path / "out" / "cells.csv")
    assert len(cells) == cells_per_budget * len(V1_TOKENS) * len(grid.batch_sizes)
    assert ("analysed as one" in capsys.readouterr().err) == (tolerance is None)  # the merge's note


def test_the_command_refuses_a_negative_tolerance_in_one_line(tmp_path, capsys):
    from powersweep.cli import main

    assert main(["analyze", str(tmp_path), "--tokens-tolerance", "-0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "powersweep analyze: error: --tokens-tolerance -0.1: must be >= 0 (a relative difference, e.g. 0.01)"
    ]
