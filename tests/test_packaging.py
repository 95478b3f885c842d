"""The sdist and wheel as a user installs them: one import name, `powersweep`, beside other distributions'
packages, metadata that PyPI accepts, and cluster jobs that upload the package alone.

W&B's sweep extra (`pip install wandb[sweeps]`) installs a top-level package named `sweeps`; the wheel must
not ship a package of that name (or `analysis`, `cluster`, `proxy_models`) for either to overwrite the other.
"""

import email
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
NOT_SHIPPED = {".git", ".venv", "runs", "out", "build", "dist", "__pycache__", ".pytest_cache", ".hypothesis"}
# The files the cluster docs run from a source tree (cluster/README.md): the sdist must hold them.
CLUSTER_FILES = sorted(
    str(p.relative_to(ROOT))
    for pattern in ("*.yaml", "slurm-sweep.sh", "Dockerfile", "README.md")
    for p in (ROOT / "cluster").glob(pattern)
)
# What `powersweep submit --address http://...` would upload, walked by the Jobs client's own code (the
# packages it would PUT are caught instead of sent, and written to package-N.zip in the working directory):
# JSON with the runtime environment's code entries and, for each package, its size in bytes and file names.
WALK_UPLOADS = """
import io, json, pathlib, zipfile
from ray.job_submission import JobSubmissionClient
from powersweep.cluster.jobs import runtime_env
from powersweep.sweeps.spec import spec_from_dict

class Answer:
    def __init__(self, status_code):
        self.status_code, self.text = status_code, ""

packages = []
def request(method, endpoint, *, data=None, json_data=None, **kwargs):
    if method == "PUT":
        names = [n for n in zipfile.ZipFile(io.BytesIO(data)).namelist() if not n.endswith("/")]
        pathlib.Path(f"package-{len(packages)}.zip").write_bytes(data)
        packages.append({"bytes": len(data), "names": names})
    return Answer(200 if method == "PUT" else 404)  # GET: no package of that hash on the cluster yet

client = object.__new__(JobSubmissionClient)  # no cluster to connect to
client._do_request = request
search = {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004], "tokens": [1024]}
spec = spec_from_dict({"name": "tiny", "search": search})
env = runtime_env(spec, "/shared/runs")
code = {key: env[key] for key in ("working_dir", "py_modules") if key in env}
client._upload_working_dir_if_needed(env)
client._upload_py_modules_if_needed(env)
print(json.dumps({"code": code, "packages": packages}))
"""


def _run(*args, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    """The project's sdist and wheel, built from a copy of the tree (a build writes build/ and egg-info where
    it runs); the wheel is built from the sdist, so the sdist holds everything a build needs."""
    tmp = tmp_path_factory.mktemp("dists")
    source = tmp / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda _, names: [n for n in names if n in NOT_SHIPPED or n.endswith(".egg-info")],
    )
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", tmp / "dist", source)
    (sdist,) = (tmp / "dist").glob("powersweep-*.tar.gz")
    (wheel,) = (tmp / "dist").glob("powersweep-*.whl")
    return {"sdist": sdist, "wheel": wheel}


@pytest.fixture(scope="module")
def wheel(dists) -> Path:
    return dists["wheel"]


def _venv_beside_ours(where: Path) -> tuple[Path, str]:
    """A fresh environment whose dependencies come from this environment's site-packages, read after its
    own (its .pth files are not run there: this environment's editable powersweep is not seen): its python
    and its site-packages."""
    _run(sys.executable, "-m", "venv", where)
    python = where / "bin" / "python"
    fresh = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    ours = next(p for p in sys.path if p.endswith("site-packages"))
    Path(fresh, "deps-from-the-test-environment.pth").write_text(ours + "\n")
    return python, fresh


def _fresh_venv(wheel: Path, where: Path) -> tuple[Path, str, dict]:
    """A fresh environment holding the wheel (without its dependencies: `_venv_beside_ours`): its python, its
    site-packages, and an environment without PYTHONPATH to run it in."""
    python, fresh = _venv_beside_ours(where / "venv")
    _run(python, "-m", "pip", "install", "-q", "--no-deps", wheel)
    return python, fresh, {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


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
    # A fresh environment holding the wheel and W&B's `sweeps` package (without its dependencies too).
    requirement = next(
        r.split(";")[0] for r in importlib.metadata.requires("wandb") if "extra == 'sweeps'" in r
    )
    python, fresh, env = _fresh_venv(wheel, tmp_path)
    venv = python.parent.parent
    _run(python, "-m", "pip", "install", "-q", "--no-deps", requirement)
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


def test_the_sdist_holds_the_cluster_files_and_the_wheel_leaves_them_out(dists):
    assert {"cluster/aws-gpu.yaml", "cluster/slurm-sweep.sh", "cluster/Dockerfile"} <= set(CLUSTER_FILES)
    with tarfile.open(dists["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert set(CLUSTER_FILES) | {"LICENSE", "pyproject.toml", "README.md"} <= names
    wheel_names = set(zipfile.ZipFile(dists["wheel"]).namelist())
    assert not {f"powersweep/{name}" for name in CLUSTER_FILES} & wheel_names  # they run from a source tree


def test_twine_accepts_the_sdist_and_the_wheel(dists):
    checked = _run(sys.executable, "-m", "twine", "check", "--strict", dists["sdist"], dists["wheel"])
    assert checked.stdout.count("PASSED") == 2, checked.stdout


def test_the_metadata_declares_the_license_and_installs_beside_an_existing_torch(wheel):
    with zipfile.ZipFile(wheel) as archive:
        metadata = email.message_from_bytes(archive.read("powersweep-0.1.0.dist-info/METADATA"))
        assert archive.read("powersweep-0.1.0.dist-info/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert metadata["License-Expression"] == "Apache-2.0" and metadata.get_all("License-File") == ["LICENSE"]
    assert not any(
        c.startswith("License ::") for c in metadata.get_all("Classifier")
    )  # PEP 639: the expression
    (torch,) = [r for r in map(Requirement, metadata.get_all("Requires-Dist")) if r.name == "torch"]
    # A lab's CUDA build is kept, and so is the CPU build that `make` pins.
    for installed in ("2.8.0+cu128", "2.11.0+cu130", "2.13.0+cpu", "2.13.0"):
        assert torch.specifier.contains(installed), (torch, installed)


@pytest.mark.slow
def test_a_job_from_a_regular_install_uploads_the_installed_package_alone(wheel, tmp_path):
    python, fresh, env = _fresh_venv(wheel, tmp_path)
    walked = json.loads(_run(python, "-c", WALK_UPLOADS, cwd=tmp_path, env=env).stdout.splitlines()[-1])
    assert walked["code"] == {"py_modules": [f"{fresh}/powersweep"]}
    (package,) = walked["packages"]
    # The files the wheel installed, and nothing else: no other distribution, no byte code pip compiled.
    installed = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("powersweep/")}
    assert set(package["names"]) == installed
    assert package["bytes"] < 4 * 2**20
    # As Ray lays it out on a node (the folder above powersweep/ on PYTHONPATH), the job imports that code.
    unpacked = tmp_path / "node"
    zipfile.ZipFile(tmp_path / "package-0.zip").extractall(unpacked)
    imported = _run(
        python,
        "-c",
        "import powersweep.job_driver, powersweep.sweeps.plan as p; print(p.__file__)",
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(unpacked)},
    )
    assert imported.stdout.strip() == f"{unpacked}/powersweep/sweeps/plan.py"


@pytest.mark.slow
def test_a_sweep_submitted_from_a_regular_install_runs_on_a_cluster_without_powersweep(wheel, tmp_path):
    from local_cluster import running_cluster
    from tiny_sweep import TINY

    from powersweep.cluster.jobs import job_logs, job_status
    from powersweep.sweeps.plan import plan
    from powersweep.sweeps.spec import spec_from_dict
    from powersweep.sweeps.store import ResultStore

    python, _, env = _fresh_venv(wheel, tmp_path)  # the user's machine
    nodes_python, _ = _venv_beside_ours(tmp_path / "nodes")  # the cluster's image: the deps, no powersweep
    missing = subprocess.run(
        [nodes_python, "-c", "import powersweep"], capture_output=True, text=True, cwd=tmp_path
    )
    assert "No module named 'powersweep'" in missing.stderr
    (tmp_path / "spec.yaml").write_text(json.dumps(TINY))
    storage = tmp_path / "store"  # one disk: the nodes see it
    with running_cluster(head_cpus=2, python=str(nodes_python)) as cluster:
        user = {**env, "RAY_AUTH_TOKEN": cluster.token, "RAY_ADDRESS": cluster.address}
        submitted = _run(
            python.parent / "powersweep", "submit", "spec.yaml", "--storage", storage, cwd=tmp_path, env=user
        )
        job_id = submitted.stdout.strip().splitlines()[-1]
        deadline = time.monotonic() + 300
        while (state := job_status(job_id, address=cluster.address, token=cluster.token))["status"] in (
            "PENDING",
            "RUNNING",
        ):
            assert time.monotonic() < deadline, f"job {job_id} still {state['status']} after 300 s"
            time.sleep(1)
        logs = job_logs(job_id, address=cluster.address, token=cluster.token)
    assert state["status"] == "SUCCEEDED", logs[-3000:]
    # the nodes could import powersweep only from the package the job uploaded, and the sweep is whole
    result = ResultStore(str(storage)).read(sweep_id="tiny")
    assert sorted(result.table["run_id"]) == sorted(plan(spec_from_dict(TINY)).row_ids)
    assert set(result.table["status"]) == {"ok"}


def test_a_job_from_a_checkout_uploads_the_source_tree_without_environments_or_results(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    walked = json.loads(
        _run(sys.executable, "-c", WALK_UPLOADS, cwd=tmp_path, env=env).stdout.splitlines()[-1]
    )
    assert walked["code"] == {"working_dir": str(ROOT)}
    (package,) = walked["packages"]
    names = set(package["names"])
    assert {"powersweep/job_driver.py", "sweeps/plan.py", "cluster/jobs.py", "pyproject.toml"} <= names
    tops = {name.split("/")[0] for name in names}
    assert not tops & {".venv", ".git", "runs", "out", "build"}
    assert not any("__pycache__" in name or ".egg-info" in name for name in names)
