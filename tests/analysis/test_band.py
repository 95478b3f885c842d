import numpy as np
import pytest

from powersweep.analysis.band import band_fit
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table


def test_gamma_band_slope_matches_the_planted_b(paper_table):
    band = band_fit(paper_table, eps=0.003)
    assert band.gamma_law.ok and band.gamma_law.coef["ln_T"] == pytest.approx(-0.51, abs=0.03)
    assert abs(band.gamma_law.coef["ln_N"]) < 0.05  # muP: no model-size dependence was planted
    assert band.n_band_runs > 0


def test_batch_band_follows_the_best_batch_size():
    # The planted loss prefers B = Bc(T) = c * T**0.5; sweep batch sizes wide enough to contain it.
    grid = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(1e9, 4e9, 16e9, 64e9),
        batch_sizes=tuple(2**k for k in range(3, 12)),
        lrs=tuple(np.geomspace(1e-4, 1.0, 29).tolist()),
    )
    law = PlantedLaw(batch_penalty=0.02, noise_sd=0.001)
    band = band_fit(load_table(synthetic_table(law, grid, seed=2)), eps=0.002)
    assert band.batch_law.coef["ln_T"] == pytest.approx(0.5, abs=0.1)
    assert "ln_N" not in band.lr_law.coef  # one model size: ln N cannot be separated


def test_band_needs_two_token_counts_and_a_sane_eps(paper_table):
    one_t = paper_table[paper_table["tokens"].eq(2e9)]
    assert not band_fit(one_t).gamma_law.ok
    with pytest.raises(AnalysisError, match="eps=1.5"):
        band_fit(paper_table, eps=1.5)


def test_formula_text_names_the_terms(paper_table):
    text = band_fit(paper_table).gamma_law.formula()
    assert text.startswith("ln_gamma = ") and "*ln_T" in text


def test_band_laws_carry_bootstrap_intervals_and_data_ranges(paper_table):
    band = band_fit(paper_table, n_boot=300)
    law = band.gamma_law
    low, high = law.ci["ln_T"]
    assert low < law.coef["ln_T"] < high and low < -0.51 < high
    assert law.ranges["T"] == (2e9, 256e9) and law.ranges["N"] == (12e6, 121e6)
    assert band.notes == ()


def _sizes_table(sizes: dict[str, float]):
    grid = SweepGrid(
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64),
        lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
        models=tuple(sizes.items()),
    )
    return load_table(synthetic_table(PlantedLaw(), grid, seed=1))


def test_equal_or_close_sizes_leave_the_n_term_out_with_a_note():
    # Two MoE layouts of one total size and a third close by: no exponent in N can be identified.
    band = band_fit(_sizes_table({"moe-a": 5e8, "moe-b": 5e8, "dense": 6e8}), n_boot=50)
    assert "ln_N" not in band.lr_law.coef and "ln_N" not in band.gamma_law.coef
    assert len(band.notes) == 1 and "too few or too close" in band.notes[0]


def test_missing_model_sizes_are_one_note():
    table = _sizes_table({"a": 1e7, "b": 4e7, "c": 1.6e8}).assign(n_params=np.nan)
    band = band_fit(table, n_boot=0)
    assert "ln_N" not in band.lr_law.coef
    assert len(band.notes) == 1 and "n_params is missing for model(s) a, b, c" in band.notes[0]
    assert (
        band_fit(_sizes_table({"a": 1e7, "b": 4e7, "c": 1.6e8}), n_boot=0).lr_law.coef.get("ln_N") is not None
    )
