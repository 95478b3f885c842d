import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_quick_gpu_benchmark_runs_on_cpu_and_writes_its_table(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--out", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "gpu.json").read_text())["rows"]
    measured = [r for r in rows if "skipped" not in r]
    assert [r["preset"] for r in rows[:6]] == [p for p in ("paper-12m", "paper-36m", "paper-121m") for _ in (0, 1)]
    assert {r["preset"] for r in rows[6:]} == {"moe torch", "moe scattermoe"}
    for r in measured:
        assert r["tokens_per_s"] > 0 and r["peak_gib"] > 0 and r["batch_size"] % r["micro_batch_size"] == 0
        assert 0 < r["mfu"] <= r["mfu_attention"] <= 1
    table = (tmp_path / "gpu.md").read_text()
    assert table.startswith("device: cpu") and table.count("\n| paper-") == 6
