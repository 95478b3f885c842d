"""`powersweep plan` needs neither torch nor Ray:
planning reads presets, schedules and token arithmetic only."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "ray", "optuna", "pandas", "pyarrow")
SPECS = sorted(p.name for p in (ROOT / "sweeps" / "specs").glob("*.yaml"))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize(
    "options", [[], ["--json"], ["--gpu-memory", "80GiB"]], ids=["text", "json", "memory"]
)
def test_plan_imports_no_torch_and_no_ray(spec, options):
    code = (
        "import contextlib, io, json, sys\n"
        "from powersweep.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
        f"    code = main(['plan', 'sweeps/specs/{spec}', *{options!r}])\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'code': code, 'heavy': heavy, 'planned': 'lineages' in out.getvalue()}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "heavy": [], "planned": True}


def test_a_cpu_sweep_starts_ray_before_importing_torch(tmp_path):
    """The driver's start-up: everything `submit` checks before Ray starts needs no torch (only the trials
    train), so the driver does not pay torch's import (0.7 s) before its first trial."""
    code = (
        "import json, sys\n"
        "import powersweep.sweeps.sweep as sweep\n"
        "from powersweep.sweeps.spec import spec_from_dict\n"
        "from tiny_sweep import TINY\n"
        "class RayStarts(Exception): pass\n"
        "def start_ray(*args, **kwargs):\n"
        "    raise RayStarts(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))\n"
        "sweep._start_ray = start_ray\n"
        "try:\n"
        f"    sweep.submit(spec_from_dict(TINY), storage={str(tmp_path / 'store')!r})\n"
        "except RayStarts as reached:\n"
        "    print(json.dumps(reached.args[0]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # tiny_sweep
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


@pytest.mark.slow
def test_a_sweep_without_loggers_imports_no_tracker_in_its_driver(tmp_path):
    """Ray Tune's usage tag of its callbacks imports mlflow and wandb (2.3 s) before the first trial starts;
    a sweep leaves that tag out while its trials run, and puts Ray's function back after."""
    assert all(importlib.util.find_spec(m) for m in ("mlflow", "wandb"))  # the test extra: both installed
    code = (
        "import json, sys\n"
        "import powersweep.sweeps.sweep as sweep\n"
        "from powersweep.sweeps.spec import spec_from_dict\n"
        "from tiny_sweep import TINY\n"
        f"done = sweep.submit(spec_from_dict(TINY), storage={str(tmp_path / 'store')!r})\n"
        "from ray.air._internal import usage\n"
        "trackers = sorted(m for m in ('mlflow', 'wandb') if m in sys.modules)\n"
        "print(json.dumps([done.failed_trials, trackers, usage.tag_callbacks.__module__]))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}  # tiny_sweep
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [0, [], "ray.air._internal.usage"]
