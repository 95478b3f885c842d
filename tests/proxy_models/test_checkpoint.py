import os
import threading

import pytest
import torch

from powersweep.proxy_models import checkpoint

REAL_SAVE = torch.save


@pytest.fixture
def gate(monkeypatch):
    """Writes wait for `gate.set()` (a write still waiting after 60 s is recorded in `gate.timed_out`)."""
    event = threading.Event()
    event.timed_out = []

    def gated_save(obj, f):
        if not event.wait(timeout=60):
            event.timed_out.append(f)
        REAL_SAVE(obj, f)

    monkeypatch.setattr(torch, "save", gated_save)
    return event


def test_save_returns_before_the_write_and_writes_the_state_as_it_was(tmp_path, gate):
    path = str(tmp_path / "trunk.pt")
    state = {"params": torch.zeros(3), "curve": {"loss": [1.0]}, "step": 4, "shape": (2, 3)}
    checkpoint.save(state, path)
    assert not os.path.exists(path)  # the write waits for the gate: save did not
    state["params"] += 1.0  # training goes on with the same tensors and lists
    state["curve"]["loss"].append(2.0)
    gate.set()
    loaded = checkpoint.load(path, map_location="cpu")
    assert not gate.timed_out and loaded["step"] == 4 and loaded["shape"] == (2, 3)
    assert loaded["params"].tolist() == [0.0, 0.0, 0.0] and loaded["curve"] == {"loss": [1.0]}


def test_a_reader_waits_for_the_write_in_flight_and_sees_the_last_state_saved(tmp_path, gate):
    path = str(tmp_path / "trunk.pt")
    gate.set()
    checkpoint.save({"step": 1}, path)
    checkpoint.wait(path)
    gate.clear()
    checkpoint.save({"step": 2}, path)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(checkpoint.load(path, map_location="cpu")))
    reader.start()
    reader.join(timeout=0.5)
    assert reader.is_alive() and not seen  # it waits for the write of step 2, not reading step 1's file
    gate.set()
    reader.join(timeout=60)
    assert seen == [{"step": 2}] and not gate.timed_out


def test_a_failed_write_is_raised_by_the_next_wait_and_leaves_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / "trunk.pt")
    checkpoint.save({"step": 1}, path)
    checkpoint.wait(path)

    def full_disk(obj, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    checkpoint.save({"step": 2}, path)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.wait(path)
    checkpoint.wait(path)  # raised once
    assert checkpoint.load(path, map_location="cpu") == {"step": 1}


def test_a_path_never_saved_does_not_exist_and_does_not_load(tmp_path):
    path = str(tmp_path / "none.pt")
    assert not checkpoint.exists(path)
    with pytest.raises(FileNotFoundError):
        checkpoint.load(path, map_location="cpu")


def test_exists_waits_for_the_first_write_of_a_path(tmp_path, gate):
    path = str(tmp_path / "trunk.pt")
    checkpoint.save({"step": 1}, path)
    seen = []
    reader = threading.Thread(target=lambda: seen.append(checkpoint.exists(path)))
    reader.start()
    reader.join(timeout=0.5)
    assert reader.is_alive() and not seen  # no file yet, but a write of it in flight
    gate.set()
    reader.join(timeout=60)
    assert seen == [True]


def test_a_failed_write_removes_its_partial_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "trunk.pt")

    def disk_full_midway(obj, f):  # f: the open temp file
        f.write(b"part of a state")
        f.flush()
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full_midway)
    checkpoint.save({"step": 1}, path)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.wait(path)
    assert os.listdir(tmp_path) == []


def test_a_checkpoint_on_a_full_disk_is_an_enospc_and_leaves_no_temp_file(small_disk):
    disk = small_disk("256k")
    path = str(disk / "trunk.pt")
    checkpoint.save({"weights": torch.zeros(2**20)}, path)  # 4 MiB into 256 KiB
    with pytest.raises(OSError) as raised:
        checkpoint.wait(path)
    assert raised.value.errno == 28  # a disk full, as a caller can tell it (sweeps/failures.py)
    assert os.listdir(disk) == []
