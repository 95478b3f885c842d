import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_store_scale_quick_reads_the_same_sweep_from_fewer_files_and_requests(tmp_path):
    out = tmp_path / "store_scale.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "store_scale.py"), "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    fill = next(r for r in results if r["what"] == "fill")
    assert fill["rows"] == 1140 and fill["lineages"] == 95  # 3 seeds of 32 lineages, 12 rows each, but one
    compact = next(r for r in results if r["what"] == "compact")
    assert compact["result_files"] == [95, 1] and compact["curve_files"] == [
        95,
        1,
    ]  # one per lineage, then one

    def row(state, where, what):
        return next(r for r in results if (r.get("state"), r["where"], r["what"]) == (state, where, what))

    for state in ("written", "compacted"):
        for where in ("local", "s3"):
            assert row(state, where, "status")["done"] == 570  # every budget row, however it is stored
            assert row(state, where, "resume-plan")["trials"] == 1  # the lineage left out
        assert row(state, "local", "analyze")["exit"] == 0
    # on S3 a read costs requests per file: one file per lineage, then one for the sweep
    assert row("written", "s3", "status")["requests"] > 95 * 2
    assert row("compacted", "s3", "status")["requests"] < 20
    assert "| 1,140 | compacted | s3 | status |" in done.stdout  # the RESULTS.md table


def test_the_store_writes_sweep_is_the_768_runs_results_md_measures():
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.spec import load_spec

    p = plan(load_spec(str(ROOT / "benchmarks" / "store_writes_768.yaml")))
    assert (len(p.jobs), sum(len(job.budgets) for job in p.jobs)) == (128, 768)
