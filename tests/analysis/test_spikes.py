"""Curves in the analysis: reading a store's curve files, the spike detector,
and the report's curve figure."""

import math

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.report import write_report
from powersweep.analysis.run_curves import (
    SPIKE_RECOVER,
    SPIKE_RISE,
    SPIKE_WINDOW_STEPS,
    attach_curves,
    choose_cell,
    detect_spike,
    load_curves,
    mark_spikes,
    run_curves,
    run_points,
    window_means,
)
from powersweep.analysis.table import load_table
from powersweep.sweeps.store import ResultStore

STEPS = np.unique(np.round(np.geomspace(1, 5000, 150))).astype(int)
TPS = 256  # tokens per step


def made_up(steps=STEPS, *, bump=None, noise=0.02, seed=0) -> pd.DataFrame:
    """A loss curve falling as a power law, with multiplicative noise;
    ``bump(step) -> factor`` adds an event."""
    rng = np.random.default_rng(seed)
    loss = 1.5 + 4.0 * steps.astype(float) ** -0.4
    loss = loss * (1 + noise * rng.standard_normal(len(steps)))
    if bump is not None:
        loss = loss * np.array([bump(s) for s in steps])
    return pd.DataFrame({"step": steps, "tokens": steps * TPS, "loss_train_mean": loss})


def spike_between(start: int, end: int, factor: float):
    return lambda step: factor if start <= step < end else 1.0


@pytest.mark.parametrize("seed", range(5))
def test_a_clean_noisy_curve_is_not_flagged(seed):
    spike = detect_spike(made_up(seed=seed))
    assert not spike.flagged and spike.rise < SPIKE_RISE


def test_a_jump_that_recovers_is_a_spike_where_it_happened():
    spike = detect_spike(made_up(bump=spike_between(1000, 1400, 1.8)))
    assert spike.flagged and spike.rise == pytest.approx(0.8, abs=0.15)
    assert 1000 * TPS <= spike.at_tokens < 1400 * TPS


@pytest.mark.parametrize("event", ["stays_high", "nan", "rises_to_the_end"])
def test_a_divergence_is_not_called_a_spike(event):
    bump = {
        "stays_high": lambda s: 2.5 if s >= 1000 else 1.0,
        "nan": lambda s: math.nan if s >= 1000 else 1.0,
        "rises_to_the_end": lambda s: 1.0 + max(s - 1000, 0) / 500,
    }[event]
    assert not detect_spike(made_up(bump=bump)).flagged


def test_thresholds_decide_the_borderline():
    small = made_up(bump=spike_between(1000, 1400, 1 + SPIKE_RISE / 2), noise=0.0)
    assert not detect_spike(small).flagged
    assert detect_spike(small, rise=SPIKE_RISE / 4, recover=SPIKE_RECOVER / 4).flagged


def test_single_noisy_steps_are_pooled_into_windows():
    """Every step a point, each step's loss 30% noisy (batch 4 x 64): pooled over 100 steps, nothing is a
    jump; a real spike of 200 steps still is."""
    steps = np.arange(1, 3001)
    clean = made_up(steps, noise=0.3, seed=3)
    assert not detect_spike(clean).flagged and detect_spike(clean, window=1).flagged  # unpooled: false alarm
    spiked = made_up(steps, noise=0.3, seed=3, bump=spike_between(1500, 1700, 2.0))
    assert detect_spike(spiked).flagged


def test_a_point_added_at_a_fork_is_not_counted_twice():
    steps = np.array([100, 200, 250, 300, 400])  # 250: a fork's point, covering steps 201-250 again
    curve = pd.DataFrame(
        {
            "step": steps,
            "tokens": steps * TPS,
            "loss_train_mean": [4.0, 3.0, 9.0, 3.0, 2.8],
            "mean_steps": [100, 100, 50, 100, 100],
            "kind": "train",
        }
    )
    windows = window_means(curve, window=SPIKE_WINDOW_STEPS)
    assert list(windows["step"]) == [100, 200, 300, 400] and list(windows["loss"]) == [4.0, 3.0, 3.0, 2.8]


def final_loss(lr: float, budget_steps: int) -> float:
    """A bowl in ln lr whose optimum falls with the budget, 8e-4 at 2000 steps and 4e-4 at 5000: each budget's
    argmin is inside the lrs the fixture trains."""
    return 2.0 + 0.05 * math.log(lr / (8e-4 * (budget_steps / 2000) ** -0.75)) ** 2


def write_lineage(
    store: ResultStore, lineage: str, lr: float, *, budgets=(2000, 5000), bump=None
) -> list[dict]:
    """A lineage's curve as a sweep stores it
    (trunk to the last fork, a decay per budget), and its result rows."""
    curve = made_up(bump=bump, seed=int(lr * 1e5))
    points, rows = [], []
    for budget in budgets:
        fork = int(0.8 * budget)
        run_id, loss_eval = f"{lineage}-{budget}", final_loss(lr, budget)
        decay = curve[(curve["step"] > fork) & (curve["step"] <= budget)]
        points += [
            {
                "segment": "decay",
                "budget": float(budget * TPS),
                "fork_tokens": float(fork * TPS),
                "kind": "train",
                "step": int(r.step),
                "tokens": int(r.tokens),
                "loss_train_mean": r.loss_train_mean,
                "run_id": run_id,
            }
            for r in decay.itertuples()
        ]
        points.append(
            {
                "segment": "decay",
                "budget": float(budget * TPS),
                "fork_tokens": float(fork * TPS),
                "kind": "eval",
                "step": budget,
                "tokens": budget * TPS,
                "loss_eval": loss_eval,
                "run_id": run_id,
            }
        )
        rows.append(
            {
                "run_id": run_id,
                "lineage_id": lineage,
                "model": "cpu-xxs",
                "batch_size": 4,
                "lr": lr,
                "tokens": budget * TPS,
                "loss_eval": loss_eval,
                "schedule": "wsd",
                "status": "ok",
                "phase": "final",
                "seq_len": 64,
                "seed": 0,
            }
        )
    trunk = curve[curve["step"] <= int(0.8 * max(budgets))]
    points += [
        {
            "segment": "trunk",
            "kind": "train",
            "step": int(r.step),
            "tokens": int(r.tokens),
            "loss_train_mean": r.loss_train_mean,
        }
        for r in trunk.itertuples()
    ]
    store.write_curve([{"lineage_id": lineage, **p} for p in points], sweep_id="s", name=lineage)
    for row in rows:
        store.write([row], sweep_id="s", name=row["run_id"])
    return rows


@pytest.fixture
def store_with_curves(tmp_path):
    store = ResultStore(str(tmp_path / "store"))
    for i, lr in enumerate((2.5e-4, 5e-4, 1e-3, 2e-3)):
        write_lineage(store, f"lin{i}", lr, bump=spike_between(2500, 2900, 1.9) if lr == 1e-3 else None)
    return tmp_path / "store"


def test_curves_round_trip_from_the_store_and_flag_the_spiked_runs(store_with_curves):
    curves = load_curves(store_with_curves / "results")
    assert set(curves["lineage_id"]) == {"lin0", "lin1", "lin2", "lin3"} and set(curves["sweep_id"]) == {"s"}
    assert load_curves(store_with_curves).shape == curves.shape  # the store's root finds the same files
    table, _ = attach_curves(load_table(store_with_curves / "results"), store_with_curves / "results")
    flagged = set(table.loc[table["spike"].fillna(False).astype(bool), "run_id"])
    assert flagged == {"lin2-5000"}  # the 2000-step run of that lineage ended before the spike
    assert table.attrs["spikes"] == 1
    kept, _ = attach_curves(
        load_table(store_with_curves / "results"), store_with_curves / "results", exclude_spikes=True
    )
    assert len(kept) == len(table) - 1 and "lin2-5000" not in set(kept["run_id"])


def test_the_store_root_reads_as_a_table_without_its_curve_files(store_with_curves):
    table = load_table(store_with_curves)
    assert len(table) == 8 and table.attrs["skipped_files"] == []


def test_the_array_path_gives_each_run_the_points_of_its_frame(store_with_curves):
    # mark_spikes reads a run's points as arrays (run_points), run_curves as frames: the same points
    curves = load_curves(store_with_curves)
    frames, arrays = run_curves(curves), run_points(curves)
    assert sorted(arrays) == sorted(frames) and len(arrays) >= 8
    for key, frame in frames.items():
        train = frame[frame["kind"].eq("train")]
        assert arrays[key].tokens.tolist() == train["tokens"].tolist()
        assert arrays[key].loss.tolist() == train["loss_train_mean"].tolist()
        assert arrays[key].step.tolist() == train["step"].astype(float).tolist()


def test_runs_without_a_curve_are_not_marked_either_way(store_with_curves):
    table = load_table(store_with_curves / "results")
    marked = mark_spikes(table, load_curves(store_with_curves / "results").query("lineage_id != 'lin0'"))
    assert marked.loc[marked["lineage_id"].eq("lin0"), "spike"].isna().all()
    assert marked.loc[marked["lineage_id"].ne("lin0"), "spike"].notna().all()
    assert mark_spikes(table, None)["spike"].isna().all()


def test_the_report_draws_the_chosen_cells_curves_after_the_answer(store_with_curves, tmp_path):
    table, curves = attach_curves(load_table(store_with_curves / "results"), store_with_curves / "results")
    paths = write_report(table, tmp_path / "out", curves=curves, n_boot=0)
    assert paths.coefficients is not None  # the made-up rows fit a law, so the page has an answer
    assert "fig0_curves" in paths.figures and paths.figures["fig0_curves"].png.read_bytes()[:4] == b"\x89PNG"
    page = paths.index_html.read_text()
    assert (
        page.index("id='answer'")
        < page.index("src='fig0_curves.png'")
        < page.index("src='fig2_loss_vs_lr.png'")
    )
    assert choose_cell(table, curves) == ("cpu-xxs", 4)
    with pytest.raises(AnalysisError, match="--curves-cell 'cpu-xxs:8'.*cpu-xxs:4"):
        choose_cell(table, curves, "cpu-xxs:8")
    with pytest.raises(AnalysisError, match="MODEL:BATCH"):
        choose_cell(table, curves, "cpu-xxs")


def test_a_store_without_curves_says_why_the_figure_is_skipped(tmp_path, store_with_curves):
    (tmp_path / "elsewhere").mkdir()
    # no curves
    table, curves = attach_curves(load_table(store_with_curves / "results"), tmp_path / "elsewhere")
    assert curves.empty and table["spike"].isna().all()
    paths = write_report(table, tmp_path / "out", curves=curves, n_boot=0)
    assert "no training curves" in paths.skipped["fig0_curves"]


def test_the_command_line_excludes_spikes_and_refuses_a_cell_without_curves(
    store_with_curves, tmp_path, capsys
):
    from powersweep.cli import main

    results = str(store_with_curves / "results")
    code = main(["analyze", results, "--out", str(tmp_path / "a"), "--bootstrap", "0", "--exclude-spikes"])
    assert "1 run(s) spiked" in capsys.readouterr().err and code == 0
    cells = pd.read_csv(tmp_path / "a" / "cells.csv")
    assert cells["n_points"].sum() == 7  # 8 runs less the spiked one
    assert main(["analyze", results, "--out", str(tmp_path / "b"), "--curves-cell", "cpu-xxs:8"]) == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the analysis' notes: one line
    assert "error: --curves-cell 'cpu-xxs:8'" in error and "cells with curves: cpu-xxs:4" in error
