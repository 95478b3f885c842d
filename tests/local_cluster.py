"""A real multi-node Ray cluster on this machine: a head and workers, each its own `ray start` process.
Importable from any test folder (tests/ is on the path, as for llmc_shards.py); tests/cluster's
`local_cluster` fixture is one.

Every node gets its own temp dir and ports, so nothing else on the machine attaches to it (a plain
`ray.init()` reads the newest cluster from the default temp dir, which these nodes never write) and it
attaches to nothing else. Every process it starts is killed by pid when the fixture ends, pass or fail:
never a bare `ray stop`, which would stop every cluster on the machine.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import psutil

START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    name: str
    process: subprocess.Popen  # `ray start --block`: its process group holds the node's processes
    temp_dir: str

    def raylet(self) -> psutil.Process | None:
        return next((p for p in _tree(self.process.pid) if p.name() == "raylet"), None)

    def tree(self) -> list[psutil.Process]:
        """The node's processes: `ray start`, its raylet and the raylet's workers."""
        return _tree(self.process.pid)


@dataclass
class LocalCluster:
    base_dir: str
    token: str
    env: dict
    ray: list[str]  # how a node starts: Ray's command line, run by the interpreter its nodes and jobs run in
    nodes: list[Node] = field(default_factory=list)
    gcs_port: int = 0
    dashboard_port: int = 0

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start_head(self, *, num_cpus: int) -> None:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        self._start(
            "head",
            [
                "--head",
                f"--port={self.gcs_port}",
                f"--num-cpus={num_cpus}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
            ],
        )

    def add_worker(self, *, num_cpus: int, env: dict | None = None) -> Node:
        """A worker node; `env` sets its own variables (e.g. its own HOME, as another machine has)."""
        return self._start(
            f"worker{len(self.nodes)}",
            [f"--address=127.0.0.1:{self.gcs_port}", f"--num-cpus={num_cpus}"],
            env=env,
        )

    @property
    def home(self) -> str:
        """The nodes' HOME (unless a worker was given its own): a folder of this cluster's."""
        return self.env["HOME"]

    def _start(self, name: str, args: list[str], *, env: dict | None = None) -> Node:
        temp_dir = os.path.join(self.base_dir, name)
        command = [
            *self.ray,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--temp-dir={temp_dir}",
            "--num-gpus=0",
            "--object-store-memory=100000000",
            f"--dashboard-agent-listen-port={free_port()}",
            "--min-worker-port=0",
            "--max-worker-port=0",
            "--disable-usage-stats",
            *args,
        ]
        log = open(os.path.join(self.base_dir, f"{name}.log"), "wb")
        process = subprocess.Popen(
            command,
            env={**self.env, **(env or {})},
            cwd=self.base_dir,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        node = Node(name, process, temp_dir)
        self.nodes.append(node)
        self._wait_for_raylet(node)
        return node

    def _wait_for_raylet(self, node: Node) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while node.raylet() is None:
            if node.process.poll() is not None or time.monotonic() > deadline:
                log = open(os.path.join(self.base_dir, f"{node.name}.log")).read()[-3000:]
                raise RuntimeError(f"ray node {node.name} did not start:\n{log}")
            time.sleep(0.5)

    def kill_raylet(self, node: Node) -> int:
        """SIGKILL the node's raylet, as a machine failure would; returns its pid."""
        raylet = node.raylet()
        raylet.kill()
        return raylet.pid

    def close(self) -> None:
        """Kill every process this cluster started (its own process groups and their trees), by pid."""
        victims = {p.pid: p for node in self.nodes for p in _tree(node.process.pid)}
        victims.update({p.pid: p for p in _processes_under(self.base_dir)})  # reparented ones too
        for node in self.nodes:
            with _gone():
                os.killpg(node.process.pid, signal.SIGKILL)  # the group this fixture created for the node
        for process in victims.values():
            with _gone():
                process.kill()  # psutil checks it is still the same process (pid and start time)
        psutil.wait_procs(list(victims.values()), timeout=10)
        for node in self.nodes:
            node.process.wait(timeout=10)


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return []


def _processes_under(base_dir: str) -> list[psutil.Process]:
    """Processes whose command line names this cluster's unique temp dir: only ours can."""
    return [p for p in psutil.process_iter() if any(base_dir in arg for arg in _cmdline(p))]


class _gone:
    """Ignore a process that has already exited."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, (ProcessLookupError, psutil.NoSuchProcess))


def cluster_env(token: str, home: str, bin_dir: str) -> dict:
    """The nodes' environment: token auth on, no project on PYTHONPATH (jobs must bring it), `home` as HOME
    (not the user's), `bin_dir` first on PATH (where a job's `python` comes from), fast failure detection (a
    dead raylet is declared dead after 3 missed 1 s health checks instead of 5 x 3 s)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_") and k != "PYTHONPATH"}
    env.update(
        HOME=home,
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
        RAY_health_check_period_ms="1000",
        RAY_health_check_failure_threshold="3",
    )
    return env


@contextmanager
def running_cluster(*, head_cpus: int, python: str | None = None) -> Iterator[LocalCluster]:
    """A started head with `head_cpus` CPUs, its nodes run by `python` (default: this environment's); every
    process it started is killed on the way out, and any left running fails the caller."""
    # short: Ray's unix socket paths must fit 107 bytes
    base_dir = tempfile.mkdtemp(prefix="psray-", dir="/tmp")
    token = secrets.token_hex(32)
    os.mkdir(os.path.join(base_dir, "home"))
    python = python or sys.executable
    cluster = LocalCluster(
        base_dir=base_dir,
        token=token,
        env=cluster_env(token, os.path.join(base_dir, "home"), os.path.dirname(python)),
        # Ray's own command line, as its `ray` script runs it, by that interpreter
        ray=[python, "-c", "import sys; from ray.scripts.scripts import main; sys.exit(main())"],
    )
    try:
        cluster.start_head(num_cpus=head_cpus)
        yield cluster
    finally:
        cluster.close()
        leftover = _processes_under(base_dir)
        shutil.rmtree(base_dir, ignore_errors=True)
        assert not leftover, f"processes left running: {[p.pid for p in leftover]}"
