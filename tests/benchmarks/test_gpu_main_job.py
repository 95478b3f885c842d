"""benchmarks/gpu_main_job.py --quick: the GPU main job's script on this CPU (`demo --gpu --quick`)."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def run_quick(out: Path, *options: str) -> dict:
    """`gpu_main_job.py --quick --out OUT [options]`, which must exit 0: its main.json."""
    script = ROOT / "benchmarks" / "gpu_main_job.py"
    done = subprocess.run(
        [sys.executable, str(script), "--quick", "--out", str(out), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "main.json").read_text())


@pytest.mark.slow
def test_the_main_job_script_measures_the_job_and_a_solo_run_and_writes_its_summary(tmp_path):
    result = run_quick(tmp_path)
    assert result["returncode"] == 0 and result["device"].startswith("cpu")
    assert result["tokens_per_s"] == pytest.approx(result["tokens_planned"] / result["sweep_wall_s"])
    assert result["vs_solo"] == pytest.approx(result["tokens_per_s"] / result["solo_tokens_per_s"])
    assert result["sweep_wall_s"] < result["command_wall_s"]  # the command adds the analysis and its start
    shares = result["shares"]
    assert shares["training"] + shares["outside_training"] == pytest.approx(1.0)
    assert list(shares["startup_parts_s"]) == [
        "checks",
        "ray",
        "trial_process",
        "trial_setup",
        "device",
        "corpus",
        "model",
        "first_step",
    ]
    assert {"a", "b", "b_ci", "b_ci_width"} <= set(result["law"]) and result["figures"]
    assert sorted(os.listdir(tmp_path / "store")) == ["curves", "results", "sweeps"]  # it comes home small
    assert json.loads((tmp_path / "solo.json").read_text()) == result["solo"]  # written before the job ran
    # the start-up of a second sweep of the shape: its parts, which add up to its total
    warm = result["warm_startup"]
    assert warm["returncode"] == 0 and list(warm["startup_parts_s"]) == list(shares["startup_parts_s"])
    assert warm["startup_s"] == pytest.approx(sum(warm["startup_parts_s"].values()))
    text = (tmp_path / "main.md").read_text()
    assert "| sweep vs solo |" in text and text.count("to the first training step") == 2


@pytest.mark.slow
def test_a_job_stopped_at_its_limit_leaves_the_solo_run_and_a_summary_of_what_it_stored(tmp_path):
    # far less than its first row takes: stopped before it ends, always
    result = run_quick(tmp_path, "--job-limit-s", "0.5")
    assert result["stopped_at_limit_s"] == 0.5 and result["rows_stored"] < result["rows_planned"] == 96
    assert json.loads((tmp_path / "solo.json").read_text()) == result["solo"]
    assert "stopped at its limit" in (tmp_path / "main.md").read_text()


@pytest.mark.slow
def test_a_solo_run_that_fails_is_reported_and_the_job_runs_all_the_same(tmp_path, monkeypatch):
    # The GPU call has one try: a solo run that fails (here: as if out of memory) must not cost the law.
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_main_job

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(gpu_main_job, "measure", out_of_memory)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    assert gpu_main_job.main(["--quick", "--out", str(tmp_path), "--job-limit-s", "0.5"]) == 0
    solo = json.loads((tmp_path / "solo.json").read_text())
    assert solo["tokens_per_s"] is None and solo["error"].startswith("RuntimeError: CUDA out of memory")
    result = json.loads((tmp_path / "main.json").read_text())
    # the job ran, and was stopped at its limit
    assert result["stopped_at_limit_s"] == 0.5 and result["rows_planned"] == 96
    text = (tmp_path / "main.md").read_text()
    assert "solo run of the shape (compile: auto): failed: RuntimeError: CUDA out of memory" in text
    left = [name for name in os.listdir(tmp_path / "tmp") if name.startswith("gpu-main-job-")]
    assert left == []  # the job's checkpoints went with it
