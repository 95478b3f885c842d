import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_prepare_throughput_quick_tokenizes_the_same_text_on_one_core_and_on_all(tmp_path):
    out = tmp_path / "prepare.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "prepare_throughput.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads(out.read_text())
    assert (
        runs[0]["threads"] == 1 and len({(r["tokens"], r["documents"]) for r in runs}) == 1
    )  # the same shards
    assert all(r["tokens"] > 0 and r["seconds"] > 0 for r in runs) and "tokens/s per core" in done.stdout
