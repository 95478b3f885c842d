import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_a_closed_stdout_ends_the_command_quietly():
    # `powersweep status DIR | head -1`: the reader goes away while the command still writes. The read end is
    # closed before the command starts, so every write meets a closed pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "powersweep.cli", "presets"],
            cwd=ROOT,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.stderr == ""
    assert done.returncode == 1


def test_the_help_lists_every_command_family():
    done = subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    for command in (
        "presets",
        "train-one",
        "demo",
        "plan",
        "submit",
        "resume",
        "status",
        "logs",
        "stop",
        "analyze",
        "predict",
    ):
        assert f"    {command} " in done.stdout, command


def test_status_of_a_directory_without_a_sweep_says_so(tmp_path, capsys):
    from powersweep.cli import main

    for path, says in ((tmp_path / "missing", "does not exist"), (tmp_path, "holds no sweep")):
        assert main(["status", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err and "--sweep" not in err


def test_demo_submits_the_shipped_cpu_quick_spec(tmp_path, monkeypatch, capsys):
    from powersweep.cli import main
    from powersweep.sweeps import spec as spec_module
    from powersweep.sweeps import sweep

    submitted = []

    def submit(spec, *, storage, checkpoints=None):  # the main job's own test runs it: stop at its start
        submitted.append((spec, storage))
        raise spec_module.SpecError("stopped before the sweep")

    monkeypatch.setattr(sweep, "submit", submit)
    assert main(["demo", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    [(spec, storage)] = submitted
    assert spec.name == "cpu-quick" and storage == str(tmp_path / "runs")
    assert "stopped before the sweep" in capsys.readouterr().err


def test_demo_gpu_without_a_gpu_is_refused_in_one_line_and_writes_nothing(tmp_path, capsys, monkeypatch):
    import torch

    from powersweep.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # as on this CPU; a GPU node has one
    assert main(["demo", "--gpu", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "powersweep demo: error: demo --gpu: no CUDA GPU here (torch.cuda.is_available() is False): run it "
        "on a GPU node, or `powersweep demo --gpu --quick` for the same job shrunk to this CPU"
    ]
    assert os.listdir(tmp_path) == []
    assert main(["demo", "--quick"]) == 2
    assert "--quick shrinks the GPU main job: give it with --gpu" in capsys.readouterr().err


def test_the_quick_gpu_job_is_the_gpu_job_shrunk():
    from powersweep.cli.sweep_commands import SPECS_DIR, quick_gpu_job
    from powersweep.sweeps.spec import load_spec

    gpu = load_spec(os.path.join(SPECS_DIR, "gpu-quick.yaml"))
    quick = quick_gpu_job(gpu)
    assert quick.search.lr == gpu.search.lr and len(quick.search.tokens) == len(gpu.search.tokens)
    assert quick.run.pack == len(gpu.search.lr) and not quick.run.uses_gpu  # one packed trial, on the CPU
    steps = [t / (4 * 64) for t in quick.search.tokens]
    gpu_steps = [t / (16 * 512) for t in gpu.search.tokens]
    assert [round(g / q, 2) for g, q in zip(gpu_steps, steps)] == [8.0] * 6  # each budget 8x fewer steps
    assert quick.train.warmup_tokens / 256 == gpu.train.warmup_tokens / (16 * 512) / 8
    assert (quick.train.schedule, quick.train.decay_fraction, quick.train.model_overrides) == (
        gpu.train.schedule,
        gpu.train.decay_fraction,
        gpu.train.model_overrides,
    )


@pytest.mark.slow
def test_demo_gpu_quick_runs_the_gpu_job_on_the_cpu_and_keeps_its_store_small(tmp_path):
    # The GPU main job's path on this CPU: one packed trial of 8 lrs, the store (results, curves, the spec) in
    # one directory and the checkpoints and Ray's files in another, the breakdown, the report.
    store, checkpoints = tmp_path / "store", tmp_path / "checkpoints"
    done = subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "demo", "--gpu", "--quick", "--storage", str(store)]
        + ["--out", str(tmp_path / "report"), "--checkpoints", str(checkpoints)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(store)) == ["curves", "results", "sweeps"]  # no checkpoints, no Ray files
    assert (checkpoints / "gpu-quick-cpu").is_dir() and (checkpoints / "ray").is_dir()
    assert "results: " in done.stdout and "(8 lineages run, 0 failed)" in done.stdout
    shares = re.search(r"wall \S+ x 1 slots: training ([\d.]+)%.*outside training ([\d.]+)%", done.stdout)
    assert float(shares[1]) + float(shares[2]) == pytest.approx(100.0, abs=0.11)
    startup = re.search(r"^to the first training step ([\d.]+) (m?s): (.*)$", done.stdout, re.M)
    parts = re.findall(r"([\w' ]+?) (-?[\d.]+) (m?s)(?:, |$)", startup[3])
    assert [name for name, *_ in parts] == [
        "checks",
        "Ray's start",
        "to the trial's process",
        "trial setup",
        "device",
        "corpus",
        "model",
        "first step",
    ]
    seconds = [float(v) / (1000 if unit == "ms" else 1) for _, v, unit in parts]
    total = float(startup[1]) / (1000 if startup[2] == "ms" else 1)
    # each part and the total printed to 0.1 s (1 s and more) or to 1 ms: they agree within those roundings
    rounding = [0.05 if unit == "s" else 0.0005 for *_, unit in [*parts, (None, None, startup[2])]]
    assert sum(seconds) == pytest.approx(total, abs=sum(rounding) + 1e-9)
    assert all(s >= 0 for s in seconds)
    assert (tmp_path / "report" / "coefficients.json").exists()
