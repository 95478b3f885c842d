import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from powersweep.analysis.bowl import fit_bowl


@settings(max_examples=40, deadline=None)
@given(
    vertex=st.floats(-0.3, 0.3),
    k_low=st.floats(0.005, 0.1),
    ratio=st.floats(0.25, 5.0),
    step=st.floats(0.3, 0.7),
)
def test_a_noise_free_two_sided_bowl_is_recovered(vertex, k_low, ratio, step):
    d = step * np.arange(-3, 4)
    y = 2.5 + k_low * np.minimum(d - vertex, 0) ** 2 + k_low * ratio * np.maximum(d - vertex, 0) ** 2
    fit = fit_bowl(d, y, low=-step, high=step)
    assert fit.vertex[0] == pytest.approx(vertex, abs=2e-3 * step)
    assert fit.k_high[0] / fit.k_low[0] == pytest.approx(ratio, rel=0.02)
    assert fit.convex[0]


def test_every_column_is_fitted_on_its_own():
    d = 0.5 * np.arange(-3, 4)
    columns = [2 + 0.03 * np.where(d > m, 3.0, 1.0) * (d - m) ** 2 for m in (-0.4, 0.0, 0.35)]
    fit = fit_bowl(d, np.column_stack(columns))
    assert fit.vertex == pytest.approx([-0.4, 0.0, 0.35], abs=2e-3)
    assert fit.fitted.shape == (7, 3) and fit.dof == 3


def test_too_few_points_is_an_error():
    with pytest.raises(ValueError, match="needs 4 points"):
        fit_bowl(np.arange(3.0), np.ones(3))


def test_four_points_pin_an_asymmetric_bowl():
    # three below the optimum set floor, k_low and m; the one above sets k_high
    d = np.array([-2.0, -1.0, 0.0, 1.0])
    m = 0.3
    fit = fit_bowl(d, 3.0 + 0.05 * np.where(d > m, 4.0, 1.0) * (d - m) ** 2, low=-1.0, high=1.0)
    assert fit.vertex[0] == pytest.approx(m, abs=1e-3) and fit.dof == 0
    assert fit.k_high[0] == pytest.approx(0.2, rel=1e-2) and fit.k_low[0] == pytest.approx(0.05, rel=1e-2)
