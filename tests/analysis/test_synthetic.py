import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_power_table, synthetic_table
from powersweep.analysis.table import KNOWN, load_table


def test_linear_law_is_the_papers_equation_6():
    law = PlantedLaw(a=4.6, b=-0.51)
    assert law.lr_opt(1024, 1e12) == pytest.approx(1024 * 4.6 * 1e12**-0.51)


def test_table_has_every_known_column_and_passes_validation():
    raw = synthetic_table(grid=SweepGrid(n_seeds=2))
    assert set(KNOWN) - {"git_sha"} <= set(raw.columns)
    assert len(load_table(raw)) == 3 * 8 * 6 * 21 * 2


def test_runs_far_above_the_optimum_diverge_with_nan_loss():
    law = PlantedLaw(diverge_ratio=4.0)
    table = synthetic_table(law)
    ratio = table["lr"] / law.lr_opt(table["batch_size"], table["tokens"])
    assert (table["status"].eq("diverged") == (ratio > 4.0)).all()
    assert table.loc[ratio > 4.0, "loss_eval"].isna().all()


def test_noise_free_loss_is_lowest_at_the_planted_optimum():
    law = PlantedLaw(noise_sd=0.0)
    grid = SweepGrid(
        models=(("m", 1e7),), tokens=(1e10,), batch_sizes=(128,), lrs=tuple(np.geomspace(1e-4, 1e-1, 301))
    )
    table = synthetic_table(law, grid)
    best = table.loc[table["loss_eval"].idxmin(), "lr"]
    assert best == pytest.approx(float(law.lr_opt(128, 1e10)), rel=0.03)


def test_seed_makes_tables_reproducible():
    pd.testing.assert_frame_equal(synthetic_table(seed=4), synthetic_table(seed=4))
    assert not synthetic_table(seed=4)["loss_eval"].equals(synthetic_table(seed=5)["loss_eval"])


def test_power_table_is_lowest_at_the_planted_coefficients_without_noise():
    law = PlantedLaw(a=4.0, b=-0.51, noise_sd=0.0)
    table = synthetic_power_table(
        law, a_values=(3.0, 4.0, 5.0), b_values=(-0.56, -0.51, -0.46), tokens=(16e9,), batch_sizes=(64,)
    )
    best = table.loc[table["loss_eval"].idxmin()]
    assert (best["power_a"], best["power_b"]) == (4.0, -0.51)
    assert set(table["schedule"]) == {"power"} and (table["lr"] == table["lr_max"]).all()


def test_unknown_law_name_is_an_error():
    with pytest.raises(AnalysisError, match="lr_law='cubic'"):
        PlantedLaw(lr_law="cubic").lr_opt(64, 1e9)
