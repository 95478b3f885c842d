"""The wheel as a user installs it: one import name, `powersweep`, beside other distributions' packages.

W&B's sweep extra (`pip install wandb[sweeps]`) installs a top-level package named `sweeps`; the wheel must
not ship a package of that name (or `analysis`, `cluster`, `proxy_models`) for either to overwrite the other.
"""

import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {".git", ".venv", "runs", "out", "build", "__pycache__", ".pytest_cache", ".hypothesis"}


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The project's wheel, built from a copy of the tree
    (a build writes build/ and egg-info where it runs)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda _, names: [n for n in names if n in NOT_SHIPPED or n.endswith(".egg-info")],
    )
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp / "dist",
        source,
    )
    (built,) = (tmp / "dist").glob("powersweep-*.whl")
    return built


def test_the_wheel_installs_only_the_powersweep_import_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top == {"powersweep"}
    # The libraries, the entry points and the shipped specs, inside it.
    for path in (
        "powersweep/sweeps/plan.py",
        "powersweep/proxy_models/model.py",
        "powersweep/analysis/fit.py",
        "powersweep/cluster/jobs.py",
        "powersweep/cli/__init__.py",
        "powersweep/job_driver.py",
        "powersweep/sweeps/specs/cpu-quick.yaml",
    ):
        assert path in names


@pytest.mark.slow
def test_the_wheel_runs_beside_the_sweeps_package_of_wandb(wheel, tmp_path):
    # A fresh environment holding the wheel and W&B's `sweeps` package (both without their dependencies, which
    # come from this environment's site-packages, read after the fresh one's own).
    requirement = next(
        r.split(";")[0] for r in importlib.metadata.requires("wandb") if "extra == 'sweeps'" in r
    )
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    python = venv / "bin" / "python"
    _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel, requirement)
    fresh = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    ours = next(p for p in sys.path if p.endswith("site-packages"))
    Path(fresh, "deps-from-the-test-environment.pth").write_text(ours + "\n")

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = _run(
        python,
        "-c",
        "import importlib.util, powersweep.sweeps.plan as plan; "
        "print(importlib.util.find_spec('sweeps').origin); print(plan.__file__)",  # W&B's needs its deps
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert where == [f"{fresh}/sweeps/__init__.py", f"{fresh}/powersweep/sweeps/plan.py"]
    helped = _run(venv / "bin" / "powersweep", "--help", cwd=tmp_path, env=env)
    assert "usage: powersweep" in helped.stdout
    # A command that reaches the libraries and the shipped specs: the paper's Table 2 ratio, from the wheel.
    spec = f"{fresh}/powersweep/sweeps/specs/paper-wsd.yaml"
    planned = _run(venv / "bin" / "powersweep", "plan", spec, cwd=tmp_path, env=env)
    assert "0.552" in planned.stdout
