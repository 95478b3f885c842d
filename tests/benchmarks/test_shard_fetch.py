import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_shard_fetch_quick_fetches_on_an_empty_cache_only(tmp_path):
    out = tmp_path / "fetch.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "shard_fetch.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    empty, filled = json.loads(out.read_text())
    assert (empty["cache"], filled["cache"]) == ("empty", "filled")
    assert empty["requests"] > filled["requests"]  # the fetch's GETs, on an empty cache only
