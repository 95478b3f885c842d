"""One driver per sweep: the lock names its holder,
refuses a second driver in one line and outlives no holder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import pytest
import yaml
from test_sweep import TINY

from powersweep.cli import main
from powersweep.sweeps.lock import SweepLock, SweepLockError, holder
from powersweep.sweeps.store import ResultStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = (
    "import sys; from powersweep.sweeps.lock import SweepLock\nwith SweepLock(sys.argv[1], 'tiny'):\n"
    "    print('locked', flush=True); sys.stdin.read()"
)


@pytest.fixture
def held(tmp_path):
    """Another process holding tiny's lock in tmp_path/store until the test lets it go (closes its stdin)."""
    storage = str(tmp_path / "store")
    process = subprocess.Popen(
        [sys.executable, "-c", HOLD, storage],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
    )
    assert process.stdout.readline().strip() == "locked"  # the event: it holds the lock now
    yield storage, process
    if process.poll() is None:
        process.stdin.close()
        process.wait(timeout=30)


def test_a_second_driver_is_refused_in_one_line_naming_the_holder(held, tmp_path, capsys):
    storage, process = held
    with pytest.raises(SweepLockError, match=f"pid {process.pid} on host {os.uname().nodename}"):
        SweepLock(storage, "tiny").__enter__()
    spec_file = tmp_path / "tiny.yaml"
    spec_file.write_text(yaml.safe_dump(TINY))
    assert main(["submit", str(spec_file), "--storage", storage]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"being run by another driver, pid {process.pid}" in err[0]
    assert "wait for it to finish or stop it" in err[0]
    assert ResultStore(storage).read(sweep_id="tiny").table.empty  # nothing written by the refused driver


def test_the_lock_of_a_killed_driver_is_taken_over_and_named(held):
    storage, process = held
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with SweepLock(storage, "tiny") as lock:
        assert lock.previous["pid"] == process.pid  # the kernel dropped its flock; its record is still there
    with SweepLock(storage, "tiny") as again:  # released on exit, its record withdrawn: nothing to take over
        assert again.previous is None


def test_an_object_store_claim_refuses_a_live_holder_and_takes_over_a_dead_one():
    storage = f"memory://lock-{uuid.uuid4().hex}"
    with SweepLock(storage, "tiny"):
        with pytest.raises(SweepLockError, match=f"pid {os.getpid()}"):
            SweepLock(storage, "tiny").__enter__()
    store = ResultStore(storage)
    with pytest.raises(Exception, match="no such file"):
        store.read_json("sweeps/tiny/driver.lock")  # a claim is withdrawn on exit
    dead = {**holder(), "pid": 2**22 + 12345}  # above the default pid_max: never a live process
    store.write_json("sweeps/tiny/driver.lock", dead)
    with SweepLock(storage, "tiny") as lock:
        assert lock.previous == dead
    elsewhere = {**holder(), "host": "another-host"}
    store.write_json("sweeps/tiny/driver.lock", elsewhere)
    with pytest.raises(SweepLockError, match="if that driver is gone, delete memory://"):
        SweepLock(storage, "tiny").__enter__()


def test_a_lock_record_that_is_not_json_does_not_block(tmp_path):
    path = tmp_path / "store" / "sweeps" / "tiny" / "driver.lock"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x00garbage")
    with SweepLock(str(tmp_path / "store"), "tiny") as lock:
        assert lock.previous is None
        assert json.loads(path.read_text())["pid"] == os.getpid()  # the holder's record, while it holds
    assert path.read_bytes() == b""  # withdrawn on a clean exit
