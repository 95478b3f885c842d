import os
import subprocess
import sys
from pathlib import Path

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

    def submit(spec, *, storage):  # the sweep itself is the main job's own test: stop where it starts
        submitted.append((spec, storage))
        raise spec_module.SpecError("stopped before the sweep")

    monkeypatch.setattr(sweep, "submit", submit)
    assert main(["demo", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    [(spec, storage)] = submitted
    assert spec.name == "cpu-quick" and storage == str(tmp_path / "runs")
    assert "stopped before the sweep" in capsys.readouterr().err
