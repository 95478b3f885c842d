import numpy as np

from analysis.calibration import calibrate, planted_sweep


def test_b_intervals_cover_the_planted_b_on_asymmetric_bowls():
    # The small version of benchmarks/calibration.py: 30 random planted sweeps, asymmetric bowls.
    result = calibrate(30, n_boot=200, first_seed=1000)
    assert 0.8 <= result.coverage_b  # 95% nominal; below 80% in 30 sweeps has probability < 0.2%
    assert result.median_b_width < 0.1  # covering by being uselessly wide does not count
    assert result.median_gamma_error < 0.05


def test_planted_sweeps_vary_what_they_should():
    laws = [planted_sweep(seed)[0] for seed in range(5)]
    spacings = [planted_sweep(seed)[2] for seed in range(5)]
    assert len({law.b for law in laws}) == 5 and all(law.asymmetry >= 2 for law in laws)
    assert all(np.sqrt(2) <= s <= 2 for s in spacings)
