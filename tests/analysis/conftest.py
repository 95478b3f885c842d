import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.synthetic import PAPER_MODELS, PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table

# Finer than the paper's lr grid, so that most cells bracket their optimum.
FINE_LRS = tuple(np.geomspace(1e-4, 0.1, 21).tolist())


@pytest.fixture(scope="session")
def paper_table() -> pd.DataFrame:
    """Three model sizes on the paper's (T, B) grid, planted gamma = 4.6 * T**-0.51."""
    return load_table(
        synthetic_table(PlantedLaw(a=4.6, b=-0.51), SweepGrid(models=PAPER_MODELS, lrs=FINE_LRS), seed=7)
    )


def _grid_one_model(**overrides) -> SweepGrid:
    base = {
        "models": (("36M", 36e6),),
        "tokens": (2e9, 8e9, 32e9, 128e9),
        "batch_sizes": (32, 64, 128, 256),
        "lrs": FINE_LRS,
    }
    return SweepGrid(**(base | overrides))


@pytest.fixture
def one_model_grid():
    """Factory of a small one-model grid; keyword arguments replace its fields."""
    return _grid_one_model
