"""Errors in trials classified once: a deterministic one (a full disk, bad data, a store that refuses writes)
ends the sweep in one line with no retry; the rows stored before it stay, once, and resume finishes the
sweep."""

import contextlib
import errno
import os
import subprocess
import sys
import time

import pytest
import yaml
from test_crash import reap_session
from test_sweep import TINY

from powersweep.proxy_models.data import DataError
from powersweep.proxy_models.lineage import load_attempts
from powersweep.proxy_models.shapes import ConfigError
from powersweep.sweeps.failures import SweepFailure, fatal_reason, raise_fatal
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore, StoreError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# 4 lineages of 1,024 steps on 2 slots, the first row at step 16: the sweep writes for seconds after it.
FILL = {
    **TINY,
    "name": "fill",
    "search": {**TINY["search"], "lr": [0.002, 0.004, 0.008, 0.016], "tokens": [2048, 32768, 131072]},
    "run": {"checkpoint_every_steps": 20, "max_retries": 2},
}


def fill(directory) -> None:
    """Write zeros under `directory` until its filesystem is full."""
    with open(os.path.join(directory, "filler"), "wb") as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 2**20)
                handle.flush()


def with_errors(stderr: str, storage) -> str:
    """A failed command's stderr and the trial errors Tune wrote under `storage`: the disk they are on goes
    with the test."""
    errors = sorted(storage.rglob("error.txt"))
    return "\n".join([stderr[-3000:], *(f"{path}:\n{path.read_text()[-2000:]}" for path in errors[:4])])


def cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": ROOT}
    return subprocess.Popen(
        [sys.executable, "-m", "powersweep.cli", *args],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.parametrize(
    "error, words",
    [
        (DataError("corpus 'x' has 10 train tokens"), "has 10 train tokens"),
        (ConfigError("tokens=1 is less than one step"), "less than one step"),
        (StoreError("storage URI 's': cannot write"), "cannot write"),
        (
            OSError(errno.ENOSPC, "No space left on device", "/store/f"),
            "free space there or give another --storage",
        ),
        (OSError(errno.EROFS, "Read-only file system"), "give a writable --storage"),
        (PermissionError(errno.EACCES, "Permission denied"), "make the store writable"),
        (
            RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"),
            "host memory",
        ),
    ],
)
def test_errors_a_retry_would_meet_again_are_one_line_with_the_fix(error, words):
    reason = fatal_reason(error)
    assert reason is not None and words in reason and "\n" not in reason


@pytest.mark.parametrize(
    "error",
    [
        ConnectionError("node lost"),
        RuntimeError("worker died"),
        OSError(errno.EIO, "I/O error"),
        KeyError("bug"),
    ],
)
def test_other_errors_are_left_to_retries(error):
    assert fatal_reason(error) is None


def test_the_driver_names_the_cause_and_a_log_holding_the_traceback(tmp_path):
    class Stop:
        fatal = {"fatal": "a " * 400 + "END", "fatal_traceback": "Traceback (most recent call last): ..."}

    (tmp_path / "a-file").write_text("")
    with pytest.raises(SweepFailure) as raised:  # a log directory that cannot be made: the next one
        raise_fatal(Stop(), log_dirs=[str(tmp_path / "a-file" / "logs"), str(tmp_path / "logs")])
    line, log = str(raised.value), raised.value.log_path
    assert len(line) - len(log) <= 300 - 26 and "\n" not in line  # room for the command's prefix
    assert line.endswith(f"traceback: {log}]") and "END" in line
    assert open(log).read().startswith("Traceback") and os.path.dirname(log) == str(tmp_path / "logs")


def _full_disk_stop(file: str):
    error = OSError(errno.ENOSPC, "No space left on device", file)

    class Stop:
        fatal = {"fatal": fatal_reason(error), "fatal_file": file, "fatal_traceback": "Traceback ..."}

    return Stop()


@pytest.mark.parametrize("depth", [1, 4, 12])
def test_a_deep_store_keeps_the_reason_its_fix_and_the_log_whole_in_the_printed_line(tmp_path, depth):
    from powersweep.sweeps.outcome import error_line

    store = tmp_path.joinpath(*["a-rather-long-folder-name"] * depth)
    file = str(store / "results" / "sweep_id=fill" / ("part-" + "0" * 32 + ".parquet"))
    with pytest.raises(SweepFailure) as raised:
        raise_fatal(_full_disk_stop(file), log_dirs=[str(store / "checkpoints" / "fill" / "logs")])
    line = error_line("powersweep submit", raised.value)
    assert line.startswith(
        "powersweep submit: error: cannot write: OSError [errno 28] No space left on device"
    )
    assert "free space there or give another --storage" in line and "..." not in line
    assert line.endswith(f"traceback: {raised.value.log_path}]") and os.path.isfile(raised.value.log_path)
    beyond_the_log = len(line) - len(raised.value.log_path)
    where = f" (writing {file})"
    assert beyond_the_log <= 300 and (where in line or beyond_the_log + len(where) > 300)  # named if it fits


def test_the_file_a_refused_write_was_for_is_named_where_there_is_room(tmp_path):
    file = str(tmp_path / "store" / "results" / "part-0.parquet")
    with pytest.raises(SweepFailure) as raised:
        raise_fatal(_full_disk_stop(file), log_dirs=[str(tmp_path / "logs")])
    assert f"--storage (writing {file}) [not retried" in str(raised.value)


def test_a_sweep_failure_survives_pickling_with_its_log():
    import pickle

    copy = pickle.loads(pickle.dumps(SweepFailure("cannot write: x [traceback: /l.log]", "/l.log")))
    assert str(copy) == "cannot write: x [traceback: /l.log]" and copy.log_path == "/l.log"


@pytest.mark.slow
def test_a_disk_that_fills_mid_sweep_ends_it_in_one_line_without_retries(tmp_path, small_disk):
    disk = small_disk("64m")
    spec_file, storage = tmp_path / "fill.yaml", disk / "store"
    spec_file.write_text(yaml.safe_dump(FILL))
    driver = cli("submit", str(spec_file), "--storage", str(storage))
    results = storage / "results" / "sweep_id=fill"
    while driver.poll() is None and not (results.is_dir() and any(results.glob("*.parquet"))):
        time.sleep(0.05)  # the event: the first row is stored
    fill(disk)
    _, err = driver.communicate(timeout=300)
    reap_session(driver.pid, wait_s=10)
    lines = [line for line in err.splitlines() if not line.startswith("rows ")]  # the progress line
    assert driver.returncode == 2, err
    assert lines[-1].startswith("powersweep submit: error: ") and "No space left on device" in lines[-1]
    assert "free space there or give another --storage" in lines[-1] and "Traceback" not in err
    log = lines[-1].rsplit("traceback: ", 1)[1].rstrip("]")
    assert "Traceback" in open(log).read()
    for attempts in (storage / "checkpoints" / "fill").glob("*/attempts.json"):
        assert len(load_attempts(str(attempts.parent))) == 1  # not retried
    store = ResultStore(str(storage))
    stored = store.read(sweep_id="fill").table
    created = dict(zip(stored["run_id"], stored["created_at"]))
    assert len(created) >= 1 and stored["run_id"].is_unique

    os.remove(disk / "filler")
    resumed = subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "resume", str(storage)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": ROOT},
        timeout=300,
    )
    assert resumed.returncode == 0, with_errors(resumed.stderr, storage)
    after = store.read(sweep_id="fill")
    assert sorted(after.table["run_id"]) == sorted(plan(spec_from_dict(FILL)).row_ids)
    assert after.duplicates_dropped == 0 and after.corrupt_files == []
    assert all(after.table.set_index("run_id").loc[r, "created_at"] == t for r, t in created.items())
