import os
import socket
import subprocess
import sys
import time

import psutil
import pytest

from powersweep.proxy_models import files


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "rows.json"
    files.write_atomically(str(path), lambda stream: stream.write(b"old"))

    def fails(stream):
        stream.write(b"part of the new")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        files.write_atomically(str(path), fails)
    assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["rows.json"]


def test_stale_temps_of_ended_processes_of_this_host_are_removed_and_no_other_file(tmp_path):
    with open("/proc/sys/kernel/pid_max") as f:
        ended = int(f.read()) + 1  # above the largest pid this host gives: no process has it
    host = socket.gethostname()
    names = {
        "ended": f"trunk.pt.tmp-{host}-{ended}",
        "mine": f"trunk.pt.tmp-{host}-{os.getpid()}",
        "other host": f"trunk.pt.tmp-{host}x-{ended}",
        "checkpoint": "trunk.pt",
        "results": f"results.json.tmp-{host}-{ended}",
    }
    for name in names.values():
        (tmp_path / name).write_bytes(b"x")
    removed = files.remove_stale_temps(str(tmp_path))
    assert sorted(removed) == sorted(str(tmp_path / names[k]) for k in ("ended", "results"))
    assert sorted(os.listdir(tmp_path)) == sorted(names[k] for k in ("mine", "other host", "checkpoint"))
    assert files.temp_path(str(tmp_path / "trunk.pt")) == str(tmp_path / names["mine"])


def ended(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # reaped already (where children are reaped without waiting)
        return True


def test_a_killed_writer_not_yet_reaped_has_ended(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        tmp = tmp_path / f"trunk.pt.tmp-{socket.gethostname()}-{child.pid}"
        tmp.write_bytes(b"part of a state")
        assert files.remove_stale_temps(str(tmp_path)) == []  # it runs
        child.kill()
        deadline = time.monotonic() + 60
        while not ended(child.pid):  # a zombie: killed, and nobody has waited for it
            assert time.monotonic() < deadline, "the killed child never ended"
            time.sleep(0.01)
        assert files.remove_stale_temps(str(tmp_path)) == [str(tmp)] and not tmp.exists()
    finally:
        child.kill()
        child.wait()
