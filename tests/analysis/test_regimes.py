import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.fit import fit_gamma
from powersweep.analysis.optimum import find_optima
from powersweep.analysis.regimes import fit_critical_batch, label_regimes, sensitivity, surge_curve
from powersweep.analysis.synthetic import PlantedLaw, synthetic_table
from powersweep.analysis.table import load_table

CRITICAL = PlantedLaw(lr_law="critical", bc_c=1.28e-3, bc_zeta=0.5, curvature_exp=-0.3, noise_sd=0.002)


@pytest.fixture(scope="module")
def critical_cells():
    from powersweep.analysis.synthetic import SweepGrid

    grid = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(1e9, 3e9, 1e10, 3e10, 1e11),
        batch_sizes=tuple(int(b) for b in np.geomspace(8, 4096, 10)),
        lrs=tuple(np.geomspace(1e-4, 0.3, 25).tolist()),
    )
    return find_optima(load_table(synthetic_table(CRITICAL, grid, seed=1)))


def test_surge_curve_peaks_at_bc_and_halves_its_log_slope():
    batch = np.geomspace(1, 1e4, 2001)
    lr = surge_curve(batch, lr_peak=0.01, bc=100.0)
    assert batch[np.argmax(lr)] == pytest.approx(100.0, rel=0.01) and lr.max() == pytest.approx(0.01)
    assert np.allclose(lr, 0.01 / np.cosh(np.log(batch / 100.0) / 2))
    slope = np.diff(np.log(lr[:10])) / np.diff(np.log(batch[:10]))
    assert slope == pytest.approx(np.full(9, 0.5), abs=0.02)  # lr ~ sqrt(B) far below Bc


def test_planted_critical_batch_exponent_is_recovered(critical_cells):
    critical = fit_critical_batch(critical_cells, n_boot=1000, seed=0)
    assert (critical.per_tokens["flag"] == "").all()
    assert critical.law.b_ci.contains(0.5) and critical.law.b == pytest.approx(0.5, abs=0.08)
    per = critical.per_tokens
    # each T: within 1.8x
    assert np.all(np.abs(np.log(per["bc"] / CRITICAL.critical_batch(per["tokens"]))) < 0.6)


def test_linear_law_puts_bc_above_the_swept_batch_sizes(paper_table):
    critical = fit_critical_batch(find_optima(paper_table), n_boot=100)
    assert set(critical.per_tokens["flag"]) == {"bc_above_range"}
    assert not critical.law.ok and "sweep wider batch sizes" in critical.law.reason


def test_regimes_follow_the_ratio_to_bc(critical_cells):
    critical = fit_critical_batch(critical_cells, n_boot=0)
    labelled = label_regimes(critical_cells, critical, near_factor=3.0)
    ratio = labelled["batch_size"] / CRITICAL.critical_batch(labelled["tokens"])
    clear = (ratio < 1 / 5) | (ratio > 5)  # far from the boundaries, the estimate of Bc cannot flip the label
    expected = np.where(ratio < 1, "small_batch", "large_batch")
    assert (labelled.loc[clear, "regime"] == expected[clear]).all()
    assert set(labelled["regime"]) == {"small_batch", "near_critical", "large_batch"}


def test_unknown_regime_without_any_bc(paper_table):
    cells = find_optima(paper_table)
    labelled = label_regimes(cells, fit_critical_batch(cells, n_boot=0))
    assert set(labelled["regime"]) == {"unknown"}


def test_sensitivity_exponent_is_recovered(critical_cells):
    sens = sensitivity(critical_cells, n_boot=500)
    assert sens.pooled.b_ci.contains(-0.3) and sens.pooled.b < 0  # less sensitive at larger T
    # curvature is 2 k(T); the penalty of lr off by 2x is k(T) ln(2)^2
    expected = CRITICAL.sharpness(sens.per_tokens["tokens"]) * np.log(2) ** 2
    assert np.allclose(sens.per_tokens["penalty_2x"], expected, rtol=0.25)


def test_gamma_cells_feed_regimes_without_losing_columns(critical_cells):
    chosen = fit_gamma(critical_cells, n_boot=0).cells
    labelled = label_regimes(chosen, fit_critical_batch(critical_cells, n_boot=0))
    assert len(labelled) == len(chosen) and {"used", "regime", "bc"} <= set(labelled.columns)
    assert isinstance(labelled, pd.DataFrame)
