import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


@pytest.mark.slow
def test_quick_gpu_benchmark_runs_on_cpu_and_writes_its_tables(tmp_path):
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--quick", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = result["rows"]
    measured = [r for r in rows if "skipped" not in r]
    assert [r["preset"] for r in rows[:6]] == [
        p for p in ("paper-12m", "paper-36m", "paper-121m") for _ in (0, 1)
    ]
    assert {r["preset"] for r in rows[6:]} == {"moe torch", "moe scattermoe"}
    for r in measured:
        assert r["tokens_per_s"] > 0 and r["peak_gib"] > 0 and r["batch_size"] % r["micro_batch_size"] == 0
        assert 0 < r["mfu"] <= r["mfu_attention"] <= 1
    head = result["head"]  # on CPU the chunked path at two chunk sizes; the fused rows need CUDA
    assert [r["preset"] for r in head if "skipped" not in r] == ["chunked, 1,024 MiB", "chunked, 64 MiB"]
    assert all(r["skipped"].startswith("fused needs CUDA") for r in head if r["preset"].startswith("fused"))
    packed = result["packed"]
    assert [r["pack"] for r in packed] == ["solo", 1, 2, 4, 8] and packed[0]["vs_solo"] == 1.0
    assert all(r["tokens_variants_per_s"] > 0 and r["peak_gib"] > 0 for r in packed)
    sweep = result["sweep"]
    assert sweep["rows_stored"] == sweep["rows_planned"] == 16 and sweep["failed_trials"] == 0
    # 2 seeds, 1 pack
    assert sweep["lineages"] == 4 and sweep["trials"] == 1 and 0 < sweep["outside_training"] < 1
    assert sweep["rows_compiled"] == 0 and sweep["compile_errors"] == []  # compile: auto is eager on CPU
    eager, cold, warm = result["compile"]
    assert [r["compiled"] for r in (eager, cold, warm)] == [False, True, True]
    assert cold["fxgraph_cache_miss"] >= 2 and cold["fxgraph_cache_hit"] == 0  # compiled into the empty cache
    assert warm["fxgraph_cache_hit"] == cold["fxgraph_cache_miss"] and warm["fxgraph_cache_miss"] == 0
    assert warm["loss_last"] == cold["loss_last"] and all(r["first_step_s"] > 0 for r in (eager, cold, warm))
    one, head_md, packed_md, sweep_md, compile_md = (tmp_path / "gpu.md").read_text().split("\n\n")
    assert compile_md.startswith("compile, device: cpu") and compile_md.count("\n| compiled, ") == 2
    assert one.startswith("one run, device: cpu") and one.count("\n| paper-") == 6
    assert one.count(" | eager |\n") == 7  # compile: auto runs eager on CPU; every row says how it ran
    assert head_md.startswith("output head paths") and head_md.count("\n| chunked, ") == 2
    assert packed_md.startswith("packed variants") and packed_md.count("\n| paper-12m | 4 x 32 |") == 5
    assert sweep_md.startswith("sweep through local Ray") and "| 4 | 1 | 16 / 16 | 0 | 0 | 0 |" in sweep_md


def test_step_profile_reports_the_unprofiled_step_and_where_its_time_goes(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "step_profile.py"),
            "--preset",
            "cpu-xxs",
            "--shape",
            "4x64",
            "--pack",
            "2",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--vocab-size",
            "300",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [report] = tmp_path.glob("step-profile-cpu-xxs-4x64-k2-*.txt")
    head, host_table = report.read_text().split("\n\n")[:2]
    assert (
        head.startswith("cpu-xxs 4x64 pack 2 vocab 300 on cpu") and "tokens x variants/s unprofiled" in head
    )
    tokens_per_s = float(head.split(" ms/step, ")[1].split(" tokens")[0].replace(",", ""))
    step_ms = float(head.split("): ")[1].split(" ms/step")[0])
    # two variants' tokens a step
    assert tokens_per_s == pytest.approx(4 * 64 * 2 / (step_ms / 1e3), rel=0.05)
    assert float(head.split(", peak ")[1].split(" GiB")[0]) > 0.1  # this process's peak (torch alone is more)
    assert "aten::bmm" in host_table  # the packed variants' batched matmuls, in the host ops table
