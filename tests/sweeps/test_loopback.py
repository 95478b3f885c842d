"""The local Ray that `submit` starts listens on 127.0.0.1 only: every listening socket of its processes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from powersweep.sweeps.loopback import LOOPBACK, SINGLE_MACHINE_ENV

ROOT = Path(__file__).resolve().parents[2]
AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
# Starts the local Ray as `submit` does (sweeps.execute.init_ray), runs one task so that a worker exists,
# waits until both agents listen (they start after ray.init returns), then prints every listening socket of
# this process and its descendants: the driver, gcs_server, raylet, the agents, the dashboard, the workers.
SCRIPT = """
import json, os, sys, time
{first}
import psutil
from powersweep.sweeps.execute import ExecutionSettings, init_ray

init_ray(ExecutionSettings(store_uri=sys.argv[1], sweep_id="loopback", checkpoint_root=sys.argv[1]))
import ray

assert ray.get(ray.remote(num_cpus=0)(lambda: os.getpid()).remote()) > 0


def listening():
    found = []
    for p in [psutil.Process()] + psutil.Process().children(recursive=True):
        try:
            name, sockets = p.name(), p.net_connections(kind="inet")
        except psutil.Error:
            continue
        found += [[name, s.laddr.ip, s.laddr.port] for s in sockets if s.status == psutil.CONN_LISTEN]
    return found


deadline = time.monotonic() + 240
while not all(any(n == agent for n, _, _ in listening()) for agent in {agents!r}):
    assert time.monotonic() < deadline, listening()
    time.sleep(0.2)
print(json.dumps({{"sockets": listening(), "node": ray.nodes()[0]["NodeManagerAddress"],
                   "env": os.environ.get({env!r})}}))
ray.shutdown()
"""


@pytest.mark.slow
@pytest.mark.parametrize("first", ["", "import ray"], ids=["fresh", "ray-imported-first"])
def test_the_local_ray_of_submit_listens_on_loopback_only(tmp_path, first):
    script = SCRIPT.format(first=first, agents=AGENTS, env=SINGLE_MACHINE_ENV)
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    names = {name for name, _, _ in seen["sockets"]}
    assert {"gcs_server", "raylet", *AGENTS} <= names  # the check covers every component
    assert any(name.startswith("ray::") and name not in AGENTS for name in names)  # a worker
    outside = [socket for socket in seen["sockets"] if socket[1] not in LOOPBACK]
    assert outside == []
    assert seen["node"] == "127.0.0.1"
    assert seen["env"] is None  # the driver's environment is as it was: it can still join a cluster
