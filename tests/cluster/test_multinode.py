"""A sweep submitted through the Jobs API to a real three-node cluster survives a worker node dying.

The node dies while a trial is held mid-lineage: the test freezes (SIGSTOP) a trial's worker process once the
trial has started its lineage and before the lineage's rows are all stored, so the kill always interrupts it.
"""

from __future__ import annotations

import glob
import os
import re
import signal
import time

import numpy as np
import pytest
import yaml

from powersweep.cli import main
from powersweep.cluster.jobs import ClusterError, job_logs, job_status, submit_job
from powersweep.proxy_models.lineage import load_attempts
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore

# Six lineages of two budgets on two one-CPU workers: most are still queued or running when a node dies.
SPEC = {
    "name": "multinode",
    "search": {
        "models": ["cpu-xs"],
        "batch_size": [4],
        "lr": [0.002, 0.004, 0.008, 0.016, 0.032, 0.064],
        "tokens": [4096, 8192],
    },
    "train": {
        "warmup_tokens": 128,
        "seq_len": 32,
        "model_overrides": {"n_layers": 1},
        "data": {"eval_tokens": 1024},
    },
    "run": {"cpus_per_trial": 1, "max_retries": 3},
}
JOB_TIMEOUT_S = 240.0
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def wait_for(condition, *, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def wait_for_end(job_id: str, address: str) -> dict:
    def ended():
        state = job_status(job_id, address=address)
        return state["status"] in TERMINAL and state

    return wait_for(ended, timeout_s=JOB_TIMEOUT_S, what=f"job {job_id} to end")


def frozen_trial(spec, storage: str, workers) -> tuple | None:
    """(node, pid) of a trial frozen with SIGSTOP in the middle of its lineage, or None if none is yet.

    A trial records its worker's pid (attempts.json) before it trains; once frozen it cannot finish, so if its
    lineage still lacks a stored row the node's death is sure to interrupt it. A trial caught after its last
    row is let go again.
    """
    stored = set(ResultStore(storage).read(sweep_id=spec.name).table["run_id"])
    for job in plan(spec).jobs:
        for attempt in load_attempts(os.path.join(storage, "checkpoints", spec.name, job.lineage_id)):
            node = next((w for w in workers if attempt.pid in {p.pid for p in w.tree()}), None)
            if node is None:
                continue  # an earlier attempt's process, or one on another node
            os.kill(attempt.pid, signal.SIGSTOP)
            stored = set(ResultStore(storage).read(sweep_id=spec.name).table["run_id"])
            if not set(job.row_ids) <= stored:
                return node, attempt.pid
            os.kill(attempt.pid, signal.SIGCONT)
    return None


@pytest.mark.slow
def test_sweep_job_survives_a_worker_node_dying(local_cluster, tmp_path, monkeypatch, capsys):
    workers = [local_cluster.add_worker(num_cpus=1) for _ in range(2)]
    address = local_cluster.address
    with pytest.raises(ClusterError, match="refused the token .* set RAY_AUTH_TOKEN"):
        job_status("no-such-job", address=address, token="0" * 64)
    # as a user would, for the CLI and the calls below
    monkeypatch.setenv("RAY_AUTH_TOKEN", local_cluster.token)

    spec = spec_from_dict(SPEC)
    (tmp_path / "file").write_text("a file where a directory of the store should be")
    unwritable = submit_job(spec, storage=str(tmp_path / "file" / "store"), address=address)
    storage = str(tmp_path / "store")  # one disk: every node of this cluster sees it
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(SPEC))
    assert main(["submit", str(tmp_path / "spec.yaml"), "--storage", storage, "--address", address]) == 0
    job_id = capsys.readouterr().out.strip()
    store = ResultStore(storage)

    victim, frozen = wait_for(
        lambda: frozen_trial(spec, storage, workers),
        timeout_s=JOB_TIMEOUT_S,
        what="a trial that has started its lineage and not stored all of its rows",
    )
    rows_before = len(store.read(sweep_id=spec.name).table)
    local_cluster.kill_raylet(victim)
    os.kill(frozen, signal.SIGKILL)  # the rest of the dead machine: the frozen trial goes with it
    state = wait_for_end(job_id, address)
    logs = job_logs(job_id, address=address)
    assert state["status"] == "SUCCEEDED", logs[-3000:]

    result = store.read(sweep_id=spec.name)
    planned = sorted(plan(spec).row_ids)  # budget results and trunk evaluations
    assert sorted(result.table["run_id"]) == planned  # every planned row, each once
    assert result.duplicates_dropped == 0 and result.corrupt_files == []
    assert set(result.table["status"]) == {"ok"}
    errored = glob.glob(os.path.join(storage, "checkpoints", "ray", spec.name, "*", "error.txt"))
    print(
        f"killed {victim.name} with {rows_before} of {len(planned)} rows stored; trials retried: "
        f"{len(errored)}"
    )
    assert errored, "no trial was interrupted: the node died idle"

    assert wait_for_end(unwritable, address)["status"] == "FAILED"  # before any trial: nothing stored
    error = job_logs(unwritable, address=address).strip().splitlines()[-1]
    assert f"error: storage '{tmp_path / 'file' / 'store'}' is not writable from node " in error
    assert "(node id " in error and "NotADirectoryError" in error


@pytest.mark.slow
def test_a_node_that_reads_other_data_stops_the_sweep_before_anything_is_stored(
    local_cluster, tmp_path, monkeypatch
):
    # Each machine has its own disk: the source names shards under HOME, and one worker's copy differs.
    from llmc_shards import write_llmc_shard

    other_home = tmp_path / "other-home"
    for home, seed in ((local_cluster.home, 0), (other_home, 1)):
        folder = os.path.join(home, "psdata")
        os.makedirs(folder)
        tokens = np.random.default_rng(seed).integers(0, 50_257, 15_000)
        for i in range(3):
            write_llmc_shard(os.path.join(folder, f"train_{i:06d}.bin"), tokens[i::3])
    local_cluster.add_worker(num_cpus=1, env={"HOME": str(other_home)})
    spec = {
        **SPEC,
        "name": "otherdata",
        "train": {
            **SPEC["train"],
            "model_overrides": {"n_layers": 1, "vocab_size": "auto"},
            "data": {"source": "~/psdata/train_*.bin", "eval_tokens": 256},
        },
    }
    monkeypatch.setenv("RAY_AUTH_TOKEN", local_cluster.token)
    storage = str(tmp_path / "store")
    job = submit_job(spec_from_dict(spec), storage=storage, address=local_cluster.address)
    state = wait_for_end(job, local_cluster.address)
    logs = job_logs(job, address=local_cluster.address)
    assert state["status"] == "FAILED", logs[-3000:]
    error = logs.strip().splitlines()[-1]
    assert re.search(
        r"error: train.data.source '~/psdata/train_\*.bin' reads as other data on node \S+ \(node id \w+\) "
        r"than where the sweep was started",
        error,
    ), error
    assert not os.path.exists(os.path.join(storage, "results"))
