import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_data_batches_quick_times_both_samplers_against_the_gpu_step(tmp_path):
    out = tmp_path / "data_batches.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "data_batches.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert set(results) == {"shards, stream", "in memory, random"}
    assert all(0 < r["median_ms"] <= r["p90_ms"] for r in results.values())
    assert "of the H100 step (113 ms; target under 2%)" in done.stdout
