"""Crashes: a driver killed with SIGKILL, a trial's worker killed mid-training, diverged runs."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import yaml
from test_curve_store import expected_keys, stored_curve
from test_execute import STEP, job
from test_sweep import TINY

from powersweep.proxy_models.budgets import planned_tokens
from powersweep.proxy_models.lineage import load_attempts
from powersweep.sweeps.execute import ExecutionSettings, execute
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import RunSpec, spec_from_dict
from powersweep.sweeps.store import ResultStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Long enough lineages that a kill lands mid-sweep: 4 lineages of 128 steps on 2 slots.
CRASH = {
    **TINY,
    "name": "crash",
    "search": {**TINY["search"], "lr": [0.002, 0.004, 0.008, 0.016], "tokens": [4096, 8192, 16384]},
    "run": {"checkpoint_every_steps": 20},
}


def cli(*args: str, **kwargs) -> subprocess.Popen:
    """`powersweep ARGS` in its own session, so the test can find every process it starts."""
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-m", "powersweep.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def session_pids(sid: int) -> set[int]:
    """Live processes of session `sid` (Ray gives its workers their own process groups, not sessions)."""
    pids = set()
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.add(int(name))
    return pids


def kill_session(sid: int, *, wait_s: float = 10.0) -> set[int]:
    """SIGKILL the session's leader, wait for the rest to die with it; returns those that did not."""
    os.kill(sid, signal.SIGKILL)
    return reap_session(sid, wait_s=wait_s)


def reap_session(sid: int, *, wait_s: float) -> set[int]:
    """Wait for the session's processes to end; SIGKILL those left after `wait_s` and return them."""
    deadline = time.monotonic() + wait_s
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in left:  # cleanup whatever outlived the driver, by pid
        os.kill(pid, signal.SIGKILL)
    return left


def stored_rows(storage) -> int:
    """Rows the store holds now (read while a sweep writes and merges them)."""
    return len(ResultStore(str(storage)).run_ids(sweep_id="crash"))


@pytest.mark.slow
def test_driver_killed_mid_sweep_resumes_without_recomputing(tmp_path):
    spec_file, storage = tmp_path / "crash.yaml", tmp_path / "store"
    spec_file.write_text(yaml.safe_dump(CRASH))
    planned = plan(spec_from_dict(CRASH)).row_ids  # budget results and trunk evaluations
    driver = cli("submit", str(spec_file), "--storage", str(storage))
    try:
        while stored_rows(storage) == 0 and driver.poll() is None:
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
    finally:
        outlived = kill_session(driver.pid)
        driver.wait()
    print(f"processes that outlived the driver's SIGKILL by 10 s: {sorted(outlived)}")
    before = ResultStore(str(storage)).read(sweep_id="crash").table
    assert 0 < len(before) < len(planned)
    resumed = cli("resume", str(storage))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    print(
        f"processes that outlived the resumed driver by 10 s: {sorted(reap_session(resumed.pid, wait_s=10))}"
    )
    after = ResultStore(str(storage)).read(sweep_id="crash")
    assert sorted(after.table["run_id"]) == sorted(planned) and after.duplicates_dropped == 0  # each row once
    created = after.table.set_index("run_id")["created_at"]
    assert all(created[r] == t for r, t in zip(before["run_id"], before["created_at"]))  # not recomputed


def kill_when_checkpointed(directory: str, killed: list) -> None:
    """Kill the first process training the lineage in `directory` once it has saved a trunk checkpoint."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        attempts = load_attempts(directory) if os.path.exists(os.path.join(directory, "trunk.pt")) else []
        if attempts:
            os.kill(attempts[0].pid, signal.SIGKILL)
            killed.append(attempts[0].pid)
            return
        time.sleep(0.01)


@pytest.mark.slow
def test_killed_worker_is_retried_from_its_checkpoint(tmp_path, local_ray):
    long = job(1e-2, budgets=(STEP * 200, STEP * 400))
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"),
        sweep_id="t",
        checkpoint_root=str(tmp_path),
        run=RunSpec(checkpoint_every_steps=10),
    )
    killed = []
    killer = threading.Thread(
        target=kill_when_checkpointed, args=(str(tmp_path / "t" / long.lineage_id), killed)
    )
    killer.start()
    report = execute([long], settings)
    killer.join()
    assert killed and report.failed_trials == 0
    assert 0 < report.checkpoint_s < report.trial_s  # the saves every 10 steps, timed apart from training
    table = ResultStore(settings.store_uri).read(sweep_id="t").table
    assert sorted(table["run_id"]) == sorted(long.row_ids) and set(table["status"]) == {"ok"}
    first, retry = load_attempts(str(tmp_path / "t" / long.lineage_id))
    assert first.pid == killed[0] and retry.pid != first.pid
    assert retry.start_step > 0 and retry.start_step % 10 == 0  # continued from a periodic trunk checkpoint
    steps = planned_tokens(long.config, long.budgets) // long.config.tokens_per_step
    assert retry.steps_trained == steps - retry.start_step
    curve = stored_curve(settings, long.lineage_id)  # every point of the lineage once, the retry's included
    assert set(curve.index) == expected_keys(long) and curve.index.is_unique


@pytest.mark.slow
def test_diverged_runs_are_stored_and_never_retried(tmp_path, local_ray):
    blows_up = job(50.0)
    settings = ExecutionSettings(
        store_uri=str(tmp_path / "store"), sweep_id="t", checkpoint_root=str(tmp_path)
    )
    assert execute([blows_up], settings).failed_trials == 0
    table = ResultStore(settings.store_uri).read(sweep_id="t").table
    assert sorted(table["run_id"]) == sorted(blows_up.row_ids) and set(table["status"]) == {"diverged"}
    assert len(load_attempts(str(tmp_path / "t" / blows_up.lineage_id))) == 1  # one attempt: no retry
