"""SIGTERM and SIGINT (a terminal's Ctrl-C) sent to a running sweep's process group: the sweep ends with exit
code 143 or 130 and one line naming `powersweep resume`, its stored rows stay, its local Ray ends with it, and
resume finishes it (sweeps/interrupt.py). Then its parts, in this process: the handlers and the line, a signal
held while Ray starts, the resume command."""

import os
import shlex
import signal
import time

import pyarrow.parquet as pq
import pytest
import yaml
from test_crash import cli, reap_session
from test_driver_kill import wait_for

from powersweep.sweeps import interrupt
from powersweep.sweeps.interrupt import SweepInterrupted, interruptible, ray_starting, resume_hint
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore

# The first row is stored early (the trunk's evaluation at the small budget's fork); the large budget then
# trains for several seconds more, so the signal lands mid-sweep.
SIGNALS = {
    "name": "signals",
    "search": {"models": ["cpu-xxs"], "batch_size": [4], "lr": [0.001, 0.002], "tokens": [16384, 262144]},
    "train": {"warmup_tokens": 2048, "seq_len": 64, "data": {"eval_tokens": 1024}},
}
NOT_OURS = ("Traceback", "*** SIGTERM", "Tuner.restore")  # Python's, Ray's C++ and Ray Tune's ways to end


def result_files(storage) -> list[str]:
    directory = storage / "results" / "sweep_id=signals"
    return [n for n in os.listdir(directory) if not n.startswith(".")] if directory.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_to_the_process_group_ends_the_sweep_cleanly_and_resume_finishes_it(tmp_path, signum):
    spec_file, storage = tmp_path / "signals.yaml", tmp_path / "store"
    spec_file.write_text(yaml.safe_dump(SIGNALS))
    planned = plan(spec_from_dict(SIGNALS)).row_ids  # budget results and trunk evaluations
    driver = cli("submit", str(spec_file), "--storage", str(storage))
    try:
        wait_for(
            lambda: result_files(storage) or driver.poll() is not None, timeout_s=300, what="a stored row"
        )
        assert driver.poll() is None, driver.stderr.read().decode()[-2000:]
        # the group a terminal signals: the driver (Ray's processes have their own)
        os.killpg(driver.pid, signum)
        _, err = driver.communicate(timeout=120)
    finally:
        left = reap_session(driver.pid, wait_s=30)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert driver.returncode == 128 + signum, lines
    assert lines[-1] == (
        f"powersweep submit: interrupted by {signal.Signals(signum).name}; the rows stored so far "
        f"are kept; to finish the sweep, run: powersweep resume {shlex.quote(str(storage))}"
    )
    assert [line for line in lines if "interrupted" in line] == lines[-1:]
    assert not [line for line in lines if any(text in line for text in NOT_OURS)], lines
    assert not left, f"outlived the driver by 30 s: {sorted(left)}"  # its local Ray ended with it
    before = ResultStore(str(storage)).read(sweep_id="signals")
    assert not before.corrupt_files and before.duplicates_dropped == 0
    assert 0 < len(before.table) < len(planned) and set(before.table["run_id"]) <= planned

    resumed = cli("resume", str(storage))
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()[-2000:]
    reap_session(resumed.pid, wait_s=10)
    after = ResultStore(str(storage)).read(sweep_id="signals")
    assert sorted(after.table["run_id"]) == sorted(planned) and after.duplicates_dropped == 0  # each row once
    held = [
        pq.read_metadata(storage / "results" / "sweep_id=signals" / n).num_rows for n in result_files(storage)
    ]
    assert sum(held) == len(planned)  # the files hold each row once
    created = after.table.set_index("run_id")["created_at"]
    assert all(created[r] == t for r, t in zip(before.table["run_id"], before.table["created_at"]))  # kept


@pytest.fixture
def handlers(monkeypatch):
    """This process's SIGINT and SIGTERM handlers and the Tune variable, as they were before the test."""
    # an interrupted block leaves its state: reset after the test
    monkeypatch.setattr(interrupt, "_watch", None)
    monkeypatch.delenv(interrupt.TUNE_SIGINT_ENV, raising=False)
    before = {s: signal.getsignal(s) for s in interrupt.SIGNALS}
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_signal_ends_the_block_with_one_line_and_one_that_ends_otherwise_restores_the_handlers(
    handlers, capsys
):
    with interruptible(program="powersweep submit", resume="powersweep resume /store"):
        assert os.environ[interrupt.TUNE_SIGINT_ENV] == "1"
        assert signal.getsignal(signal.SIGTERM) is not handlers[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert interrupt.TUNE_SIGINT_ENV not in os.environ

    with pytest.raises(SweepInterrupted) as stop, interruptible(program="powersweep submit", resume="RESUME"):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler's exception ends the sleep at once
    assert stop.value.exit_code == 143
    assert capsys.readouterr().err == (
        "powersweep submit: interrupted by SIGTERM; the rows stored so far are kept; "
        "to finish the sweep, run: RESUME\n"
    )


def test_a_signal_while_ray_starts_is_raised_once_it_has(handlers, capsys):
    from ray._private import services, utils

    popen, set_handler = services.ConsolePopen, utils.set_sigterm_handler
    with pytest.raises(SweepInterrupted) as stop, interruptible(program="p", resume="r"):
        with ray_starting():
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(lambda: interrupt._watch.received, timeout_s=30, what="the handler to hold the signal")
            assert services.ConsolePopen is not popen and utils.set_sigterm_handler is not set_handler
        raise AssertionError("ray_starting ended without raising the signal it held")
    assert stop.value.exit_code == 130 and capsys.readouterr().err.startswith("p: interrupted by SIGINT;")
    assert services.ConsolePopen is popen and utils.set_sigterm_handler is set_handler


def test_the_resume_hint_names_the_sweep_where_the_store_holds_others(tmp_path):
    assert resume_hint(str(tmp_path), sweep_id="a") == f"powersweep resume {tmp_path}"
    (tmp_path / "sweeps" / "b").mkdir(parents=True)
    assert resume_hint(str(tmp_path), sweep_id="a") == f"powersweep resume {tmp_path} --sweep a"
    # resume found the one
    assert resume_hint(str(tmp_path), sweep_id=None) == f"powersweep resume {tmp_path}"
    assert (
        resume_hint("s3://bucket/runs", sweep_id="a", address="ray://head:10001")
        == "powersweep resume s3://bucket/runs --sweep a --address ray://head:10001"
    )
