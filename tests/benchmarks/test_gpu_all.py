"""benchmarks/gpu_all.sh drives a GPU session's measurements:
a dry run (PYTHON=echo) checks what it would run."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]


def dry_run(tmp_path, *parts: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu_all.sh"), str(tmp_path), *parts],
        cwd=ROOT,
        env={**os.environ, "PYTHON": "echo"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def flags_of(script: str) -> set[str]:
    helps = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    return set(re.findall(r"--[a-z][a-z-]*", helps))


def test_every_part_runs_what_exists_with_flags_it_takes(tmp_path):
    assert dry_run(tmp_path).returncode == 0  # every part, in the default order
    parts = [p.split(" rc ")[0] for p in (tmp_path / "parts.txt").read_text().splitlines()]
    assert parts == [
        "main",
        "tests",
        "profile-solo",
        "profile-solo-no-graphs",
        "profile-k8",
        "packed",
        "sweep",
        "one",
        "modes-solo-16x4096-blocks-default",
        "modes-k8-16x1024-blocks-default",
        "modes-solo-16x4096-trunk-default",
        "modes-solo-16x4096-auto-reduce-overhead",
        "modes-k8-16x1024-auto-reduce-overhead",
        "head",
        "compile",
    ]
    flags = {script: flags_of(script) for script in ("step_profile.py", "gpu.py", "gpu_main_job.py")}
    for part in parts:
        if part == "tests":
            continue
        script, *args = (tmp_path / f"{part}.log").read_text().split()
        assert {a for a in args if a.startswith("--")} <= flags[Path(script).name], part
        if script.endswith("gpu.py"):
            assert args[args.index("--only") + 1] == part
    _, _, *tests = (tmp_path / "tests.log").read_text().split()  # -m pytest ... files and node ids
    for test in (t for t in tests if t.startswith("tests/")):
        path, _, name = test.partition("::")
        assert (ROOT / path).exists() and (not name or f"def {name}(" in (ROOT / path).read_text())


def test_the_checkpoint_part_runs_both_modes_with_flags_the_benchmark_takes(tmp_path):
    assert dry_run(tmp_path, "checkpoint").returncode == 0
    parts = [p.split(" rc ")[0] for p in (tmp_path / "parts.txt").read_text().splitlines()]
    assert parts == ["checkpoint", "checkpoint-synchronous"]
    for part in parts:
        script, *args = (tmp_path / f"{part}.log").read_text().split()
        assert Path(script).name == "checkpoint_cost.py"
        assert {a for a in args if a.startswith("--")} <= flags_of("checkpoint_cost.py")
        assert ("--synchronous" in args) == part.endswith("synchronous")


def test_the_jobshape_part_profiles_the_main_jobs_packed_step_as_run_with_the_fused_head_and_graphs(tmp_path):
    assert dry_run(tmp_path, "jobshape").returncode == 0
    parts = [p.split(" rc ")[0] for p in (tmp_path / "parts.txt").read_text().splitlines()]
    assert parts == [
        "jobshape-k8-16x512-blocks-default-head-auto",
        "jobshape-k8-16x512-blocks-default-head-fused",
        "jobshape-k8-16x512-auto-reduce-overhead-head-auto",
    ]
    from powersweep.sweeps.spec import load_spec

    job = load_spec(str(ROOT / "sweeps" / "specs" / "gpu-quick.yaml"))
    for part in parts:
        script, *args = (tmp_path / f"{part}.log").read_text().split()
        assert Path(script).name == "step_profile.py"
        assert {a for a in args if a.startswith("--")} <= flags_of("step_profile.py")
        given = dict(zip(args[::2], args[1::2]))
        assert given["--preset"] == job.search.models[0] and given["--pack"] == str(len(job.search.lr))
        assert given["--shape"] == f"{job.search.batch_size[0]}x{job.train.seq_len}"
        assert given["--vocab-size"] == "256"  # the embedded corpus's bytes: the job's vocab_size 'auto'
        scope, mode = ("blocks", "default") if "blocks" in part else ("auto", "reduce-overhead")
        head = part.rsplit("-", 1)[1]
        assert (given["--compile-scope"], given["--compile-mode"], given["--head"]) == (scope, mode, head)


def test_an_unknown_part_is_refused(tmp_path):
    done = dry_run(tmp_path, "nonsense")
    assert done.returncode == 2 and "unknown part nonsense" in done.stderr
