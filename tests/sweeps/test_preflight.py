"""What submit refuses before it writes anything: data that cannot serve a run, a CPU trial too large for the
machine's memory, a store without room or a directory that takes no file, resources no node has, a lock on a
full disk. Each refusal is one line, exit code 2, and leaves the store as it was (here: not created)."""

import errno
import os
import subprocess
import sys

import pytest
import yaml
from test_failures import ROOT, fill
from test_sweep import TINY

from powersweep.cli import main
from powersweep.sweeps.lock import SweepLock
from powersweep.sweeps.plan import plan
from powersweep.sweeps.preflight import host_bytes, sweep_bytes
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import StoreError


def refused(tmp_path, capsys, spec: dict, storage=None) -> str:
    """Submit `spec` into `storage` (default: a new folder):
    exit code 2 and one stderr line, which it returns."""
    spec_file, storage = tmp_path / "spec.yaml", storage or tmp_path / "store"
    spec_file.write_text(yaml.safe_dump(spec))
    capsys.readouterr()
    assert main(["submit", str(spec_file), "--storage", str(storage)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


def with_data(tmp_path, source) -> dict:
    return {**TINY, "train": {**TINY["train"], "data": {"source": str(source), "eval_tokens": 1024}}}


@pytest.mark.parametrize("kind", ["empty file", "empty directory", "11 bytes"])
def test_data_that_cannot_serve_a_run_is_refused_before_anything_is_written(tmp_path, capsys, kind):
    source = tmp_path / "corpus"
    if kind == "empty directory":
        source.mkdir()
    else:
        source.write_text("" if kind == "empty file" else "hello world")
    line = refused(tmp_path, capsys, with_data(tmp_path, source))
    assert f"train.data.source='{source}'" in line
    assert ("holds no files" if kind == "empty directory" else "use a larger corpus") in line
    assert not (tmp_path / "store").exists()


def test_a_cpu_trial_larger_than_the_machines_memory_is_refused(tmp_path, capsys):
    huge = {**TINY, "train": {**TINY["train"], "model_overrides": {"n_layers": 1, "d_model": 10_000_000}}}
    line = refused(tmp_path, capsys, huge)
    assert "of host memory per trial" in line and "this machine" in line and "model_overrides" in line
    assert not (tmp_path / "store").exists()


def test_the_estimates_grow_with_the_model_and_the_plan():
    small, wide = (
        plan(spec_from_dict(TINY)),
        plan(
            spec_from_dict(
                {**TINY, "train": {**TINY["train"], "model_overrides": {"n_layers": 1, "d_model": 1024}}}
            )
        ),
    )
    assert host_bytes(wide.trials[0]) > host_bytes(small.trials[0])
    assert sweep_bytes(wide) > sweep_bytes(small)
    more = plan(spec_from_dict({**TINY, "search": {**TINY["search"], "lr": [0.001, 0.002, 0.004, 0.016]}}))
    assert sweep_bytes(more) > sweep_bytes(small)


def test_a_store_without_room_for_the_sweep_is_refused(tmp_path, capsys, small_disk):
    disk = small_disk("256k")
    line = refused(tmp_path, capsys, TINY, storage=disk / "store")
    assert "free space there, or give another --storage" in line and "needs about" in line
    assert os.listdir(disk) == []


def test_a_directory_that_takes_no_file_is_refused_before_training(tmp_path, capsys):
    results = tmp_path / "store" / "results" / "sweep_id=tiny"
    results.mkdir(parents=True)
    if subprocess.run(["chattr", "+i", str(results)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        line = refused(tmp_path, capsys, TINY)
    finally:
        subprocess.run(["chattr", "-i", str(results)], check=True)
    assert f"{results}: cannot write" in line and "Operation not permitted" in line
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == ["results"]  # nothing else written


@pytest.mark.slow
@pytest.mark.parametrize("field, value", [("cpus_per_trial", 100), ("gpus_per_trial", 1)])
def test_resources_no_node_has_are_refused_before_anything_is_written(tmp_path, field, value):
    spec_file, storage = tmp_path / "spec.yaml", tmp_path / "store"
    spec_file.write_text(yaml.safe_dump({**TINY, "run": {field: value}}))
    done = subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "submit", str(spec_file), "--storage", str(storage)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and f"run.{field}={value}" in lines[0], done.stderr
    assert not storage.exists()


def test_a_lock_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk):
    disk = small_disk("64k")
    fill(disk)
    with pytest.raises(
        StoreError,
        match=r"cannot take the sweep's lock .*\[errno 28\] No space left on device: "
        "free space there or give another --storage",
    ):
        SweepLock(str(disk / "store"), "tiny").__enter__()
    assert sorted(os.listdir(disk)) == ["filler"]  # no sweep directory, no empty lock


def test_a_lock_write_that_fails_leaves_nothing(tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", full)  # the same failure where no filesystem can be mounted
    with pytest.raises(StoreError, match="No space left on device"):
        SweepLock(str(tmp_path / "store"), "tiny").__enter__()
    assert not (tmp_path / "store").exists()
