import math

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.optimum import choose_schedule, find_optima, lr_points
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PAPER_LRS, PlantedLaw, synthetic_table
from powersweep.analysis.table import load_table


def _cell(lr, loss, status=None, seed=0) -> pd.DataFrame:
    frame = pd.DataFrame(
        {"model": "m", "tokens": 1e9, "batch_size": 64, "lr": lr, "loss_eval": loss, "seed": seed}
    )
    return frame if status is None else frame.assign(status=status)


def _one(frame: pd.DataFrame) -> pd.Series:
    cells = find_optima(load_table(frame))
    assert len(cells) == 1
    return cells.iloc[0]


def test_noise_free_parabola_gives_the_exact_sub_grid_optimum():
    lr = np.geomspace(1e-3, 1e-1, 9)
    true = 0.0137  # between grid points
    row = _one(_cell(lr, 3.0 + 0.05 * np.log(lr / true) ** 2))
    assert row["method"] == "bowl" and row["ok"]
    assert row["lr_opt"] == pytest.approx(true, rel=1e-4)
    assert row["lr_opt_grid"] != pytest.approx(true, rel=0.05)  # the grid alone is off
    assert row["curvature"] == pytest.approx(0.1, rel=1e-4)  # d2 loss / d(ln lr)^2 = 2 * 0.05
    assert row["penalty_2x"] == pytest.approx(0.05 * math.log(2) ** 2, rel=1e-4)
    assert row["loss_opt"] == pytest.approx(3.0, abs=1e-6)


@pytest.mark.parametrize("steeper", [1.0, 2.0, 4.0])
def test_noise_free_asymmetric_bowl_gives_the_exact_optimum(steeper):
    # Past the optimum the loss climbs `steeper` times faster; a parabola's vertex drifts to the flat side.
    lr = np.geomspace(1e-3, 1e-1, 11)  # factor 1.58 apart
    true = 0.0137
    u = np.log(lr / true)
    loss = 3.0 + 0.02 * np.where(u < 0, 1.0, steeper) * u**2
    row = _one(_cell(lr, loss))
    assert row["method"] == "bowl"
    assert row["lr_opt"] == pytest.approx(true, rel=1e-3)
    assert row["curvature"] == pytest.approx(0.02 * (1 + steeper), rel=1e-3)
    window = np.abs(np.log(lr / lr[np.argmin(loss)])) < 2.1 * np.log(lr[1] / lr[0])
    parabola = np.polyfit(u[window], loss[window], 2)
    if steeper > 1:  # the parabola through the same 5 points is biased low; the bowl is not
        assert -parabola[1] / (2 * parabola[0]) < -0.05


def test_seeds_are_averaged_before_the_argmin():
    lr = np.geomspace(1e-3, 1e-1, 7)
    base = 3.0 + 0.05 * np.log(lr / 0.01) ** 2
    bump = np.where(np.arange(7) == 3, 0.2, 0.0)  # seed 0 is bad at the true best lr, seed 1 good
    frame = pd.concat([_cell(lr, base + bump, seed=0), _cell(lr, base - bump, seed=1)])
    row = _one(frame)
    assert row["lr_opt_grid"] == pytest.approx(lr[3])
    assert row["n_runs"] == 14 and row["n_points"] == 7


def test_a_diverged_run_is_never_the_optimum_even_with_a_low_loss():
    lr = np.geomspace(1e-3, 1e-1, 7)
    loss = 3.0 + 0.05 * np.log(lr / 0.01) ** 2
    status = ["ok"] * 7
    status[3] = "diverged"  # its recorded loss is the lowest, but it diverged
    row = _one(_cell(lr, loss - np.where(np.arange(7) == 3, 1.0, 0.0), status=status))
    assert row["lr_opt_grid"] != pytest.approx(lr[3])
    assert row["n_diverged"] == 1


def test_a_seed_that_diverged_rules_out_its_lr():
    lr = np.geomspace(1e-3, 1e-1, 7)
    loss = 3.0 + 0.05 * np.log(lr / 0.01) ** 2
    diverged_seed = _cell(lr, np.where(np.arange(7) == 3, np.nan, loss), seed=1)
    points = lr_points(load_table(pd.concat([_cell(lr, loss, seed=0), diverged_seed])))
    assert np.isinf(points["loss"].iloc[3]) and np.isfinite(points["loss"]).sum() == 6


def test_edge_flags_at_grid_ends_and_next_to_divergence():
    lr = np.geomspace(1e-3, 1e-1, 7)
    low = _one(_cell(lr, 3.0 + lr))  # increasing: best at the lowest lr
    high = _one(_cell(lr, 3.0 - lr))  # decreasing: best at the highest lr
    assert low["edge_low"] and not low["ok"] and "extend the grid down" in low["reason"]
    assert high["edge_high"] and not high["ok"] and "extend the grid up" in high["reason"]
    loss = 3.0 - lr
    loss[5:] = np.nan  # the two largest lrs diverged: the best finite lr sits at the divergence edge
    cliff = _one(_cell(lr, loss))
    assert (
        cliff["edge_high"] and cliff["lr_opt_grid"] == pytest.approx(lr[4]) and "diverged" in cliff["reason"]
    )


def test_planted_edge_cells_on_the_paper_grid_are_flagged(one_model_grid):
    # With the paper's lr grid (0.0002 to 0.0256), B=16 at T=256B wants lr 1.1e-4 and B=512 at T=2B wants
    # 0.042.
    law = PlantedLaw(noise_sd=0.0)
    grid = one_model_grid(tokens=(2e9, 256e9), batch_sizes=(16, 128, 512), lrs=PAPER_LRS)
    cells = find_optima(load_table(synthetic_table(law, grid)))
    flagged = {(r.tokens, r.batch_size): r for r in cells.itertuples()}
    assert flagged[(256e9, 16)].edge_low and flagged[(2e9, 512)].edge_high
    assert flagged[(2e9, 128)].ok and flagged[(256e9, 128)].ok


def test_small_and_all_diverged_cells_get_a_reason_not_a_crash():
    two = _one(_cell([1e-3, 2e-3], [3.0, 2.9]))
    assert not two["ok"] and "too_few_points" in two["flags"] and "need 3" in two["reason"]
    dead = _one(_cell([1e-3, 2e-3, 4e-3], [np.nan] * 3))
    assert not dead["ok"] and dead["flags"] == "all_diverged" and np.isnan(dead["lr_opt"])


def test_concave_window_falls_back_to_the_grid():
    lr = np.geomspace(1e-3, 1e-1, 6)
    # one point left of the argmin: a parabola, and a concave one
    wobbly = np.array([3.5, 3.0, 3.4, 3.45, 3.1, 3.6])
    row = _one(_cell(lr, wobbly))
    assert row["method"] == "grid" and "quadratic_rejected" in row["flags"] and row["ok"]
    assert row["lr_opt"] == pytest.approx(lr[1])
    # 200 draws
    assert row["ln_lr_opt_se"] == pytest.approx(math.log(lr[1] / lr[0]) / math.sqrt(12), rel=0.15)


def test_bowl_vertex_stays_within_two_grid_points_of_the_argmin():
    lr = np.geomspace(1e-3, 1e-1, 7)
    lopsided = np.array([3.9, 3.254, 3.245, 3.142, 3.221, 3.147, 3.9])
    row = _one(_cell(lr, lopsided))
    assert row["method"] == "bowl" and lr[1] <= row["lr_opt"] <= lr[5]
    draws = np.exp(row["ln_lr_opt_draws"])
    assert lr[1] * 0.999 <= draws.min() and draws.max() <= lr[5] * 1.001


def test_an_argmin_one_step_off_the_optimum_leaves_the_optimum_inside_the_draws():
    # A shallow asymmetric bowl, its optimum 2.4 grid steps above lr[0], and a noisy lr[1] that takes the
    # argmin: held to the argmin's neighbours, the vertex and all its draws would stop at lr[2], short of the
    # optimum.
    lr = np.geomspace(1e-3, 1e-1, 9)
    u = np.log(lr / (lr[0] * (lr[1] / lr[0]) ** 2.4))
    loss = 3.0 + 0.02 * np.where(u > 0, 3.0, 1.0) * u**2
    loss[1] -= 0.012
    row = _one(_cell(lr, loss))
    assert row["lr_opt_grid"] == pytest.approx(lr[1]) and row["method"] == "bowl"
    steps = (row["ln_lr_opt_draws"] - np.log(lr[0])) / np.log(lr[1] / lr[0])  # grid steps above lr[0]
    low, high = np.percentile(steps, [2.5, 97.5])
    assert low < 2.4 < high


def test_one_point_past_the_argmin_still_takes_the_asymmetric_bowl():
    # The grid ends one point above the argmin: a parabola puts the vertex on the flat side of this bowl.
    lr = np.geomspace(1e-3, 1e-1, 7)
    opt = lr[5] / 1.1
    u = np.log(lr / opt)
    row = _one(_cell(lr, 3.0 + 0.05 * np.where(u > 0, 4.0, 1.0) * u**2))
    assert row["method"] == "bowl" and row["lr_opt_grid"] == pytest.approx(lr[5])
    assert row["lr_opt"] == pytest.approx(opt, rel=0.01)
    assert row["ok"] and row["flags"] == "one_side"  # kept, and said
    centred = _one(_cell(lr, 3.0 + 0.05 * np.log(lr / lr[3]) ** 2))
    assert centred["flags"] == ""


def test_cells_with_one_side_short_are_named_in_a_note():
    lr = np.geomspace(1e-3, 1e-1, 7)
    frames = [
        _cell(lr, 3.0 + 0.05 * np.log(lr / lr[j]) ** 2).assign(tokens=t) for j, t in ((5, 1e9), (3, 4e9))
    ]
    notes = [n for n in analyze(pd.concat(frames), n_boot=0).notes if "one_side" in n]
    assert len(notes) == 1 and notes[0].startswith("1 of 2 cells") and "T = 1e+09" in notes[0]


def test_standard_errors_are_roughly_calibrated(one_model_grid):
    law = PlantedLaw(noise_sd=0.003)
    cells = find_optima(load_table(synthetic_table(law, one_model_grid(n_seeds=1), seed=3)))
    cells = cells[cells["method"].eq("bowl")]
    z = (np.log(cells["lr_opt"]) - np.log(law.lr_opt(cells["batch_size"], cells["tokens"]))) / cells[
        "ln_lr_opt_se"
    ]
    assert len(z) >= 12
    assert 0.8 <= np.mean(np.abs(z) < 2.5)  # normal: 99%; allows a pooled noise estimate on few cells
    assert np.std(z) > 0.3  # not absurdly wide either


def test_sub_grid_estimate_beats_the_grid_argmin(one_model_grid):
    law = PlantedLaw(noise_sd=0.001)
    cells = find_optima(load_table(synthetic_table(law, one_model_grid(), seed=5)))
    cells = cells[cells["ok"]]
    truth = np.log(law.lr_opt(cells["batch_size"], cells["tokens"]))
    sub = np.abs(np.log(cells["lr_opt"]) - truth).mean()
    grid = np.abs(np.log(cells["lr_opt_grid"]) - truth).mean()
    assert sub < 0.6 * grid


def test_mixed_schedules_must_be_chosen():
    cells = [_cell([1e-3, 2e-3, 4e-3], [3.1, 3.0, 3.1]).assign(schedule=s) for s in ("wsd", "cosine")]
    table = load_table(pd.concat(cells))
    with pytest.raises(AnalysisError, match="mixes schedules"):
        choose_schedule(table)
    assert len(find_optima(table, schedule="cosine")) == 1
    with pytest.raises(AnalysisError, match="schedule='linear' has no runs"):
        find_optima(table, schedule="linear")


def test_failed_runs_are_left_out_not_counted_as_diverged():
    lr = np.geomspace(1e-3, 1e-1, 5)
    row = _one(_cell(lr, [3.2, 3.1, np.nan, 3.1, 3.2], status=["ok", "ok", "failed", "ok", "ok"]))
    assert row["n_points"] == 4 and row["n_diverged"] == 0


def test_a_window_of_four_lrs_reads_the_optimum_as_seven_do():
    # An adaptive search's window: 4 finite lrs a factor 2 apart, the next one up diverged. A parabola through
    # them put this asymmetric bowl's optimum 10% low; the bowl reads it as the full grid does.
    lr = 0.002 * 2.0 ** np.arange(-3, 4)
    u = np.log(lr / 0.01)
    loss = 3 + np.where(u > 0, 0.1, 0.05) * u**2 + 0.001 * np.sin(1e4 * lr)
    seven = _one(_cell(np.r_[lr, 0.032], np.r_[loss, np.nan], status=["ok"] * 7 + ["diverged"]))
    four = _one(_cell(np.r_[lr[3:], 0.032], np.r_[loss[3:], np.nan], status=["ok"] * 4 + ["diverged"]))
    assert four["method"] == seven["method"] == "bowl"
    assert four["lr_opt"] == pytest.approx(seven["lr_opt"], rel=0.02) == pytest.approx(0.01, rel=0.06)
