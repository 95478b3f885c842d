import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def run(*flags: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "checkpoint_cost.py"), "--budgets", "4", "8", *flags],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[0])


@pytest.mark.parametrize("synchronous", [False, True])
def test_checkpoint_cost_times_a_packed_lineage_and_its_saves(synchronous):
    row = run(*(["--synchronous"] if synchronous else []))
    assert row["synchronous"] == synchronous and row["pack"] == 4 and row["steps"] > 8
    # weights and two Adam moments of every variant, float32, with a little of the file format around them
    assert 3 * 4 * row["n_params"] * 4 / 1e9 <= row["checkpoint_gb"] < 1.1 * 3 * 4 * row["n_params"] * 4 / 1e9
    assert 0 < row["checkpoint_s"] <= row["outside_s"] < row["wall_s"]
