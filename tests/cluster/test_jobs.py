"""Job submission without a cluster: addresses, storage URIs, the token and the CLI's one-line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from powersweep.cli import main
from powersweep.cluster.jobs import (
    ClusterError,
    auth_token,
    cluster_storage,
    is_jobs_address,
    job_code,
    runtime_env,
)
from powersweep.sweeps.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
TINY = {
    "name": "tiny",
    "search": {"models": ["cpu-xs"], "batch_size": [4], "lr": [0.004], "tokens": [1024]},
    "train": {"warmup_tokens": 128, "seq_len": 32},
}


@pytest.mark.parametrize(
    "address, jobs",
    [
        ("http://127.0.0.1:8265", True),
        ("https://ray.example:443", True),
        ("ray://head:10001", False),
        ("head:6379", False),
        (None, False),
    ],
)
def test_only_http_addresses_go_through_the_jobs_api(address, jobs):
    assert is_jobs_address(address) is jobs


@pytest.mark.parametrize("storage", ["runs/x", "x", "memory://runs"])
def test_storage_no_cluster_node_can_share_is_refused(storage):
    with pytest.raises(ClusterError, match=f"storage '{storage}'"):
        cluster_storage(storage)


@pytest.mark.parametrize("storage", ["/shared/runs", "file:///shared/runs", "s3://bucket/runs", "gs://b/p"])
def test_shared_storage_is_accepted(storage):
    assert cluster_storage(storage) == storage


def test_token_follows_rays_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert auth_token() == (None, "no token")
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-default\n")
    assert auth_token()[0] == "from-default"
    (tmp_path / "token").write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert auth_token()[0] == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert auth_token() == ("from-env", "RAY_AUTH_TOKEN")


def test_unreadable_token_path_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ClusterError, match="RAY_AUTH_TOKEN_PATH .* set RAY_AUTH_TOKEN"):
        auth_token()


def test_runtime_env_carries_the_project_and_the_sweep():
    spec = spec_from_dict(TINY)
    env = runtime_env(spec, "/shared/runs")
    # run from this checkout (installed editable): the checkout is the job's working directory
    assert env["working_dir"] == str(ROOT) and {"/.venv", "/runs", "/out", "/.git"} <= set(env["excludes"])
    assert "py_modules" not in env
    assert spec_from_dict(yaml.safe_load(env["env_vars"]["POWERSWEEP_SPEC"])) == spec
    assert env["env_vars"]["POWERSWEEP_STORAGE"] == "/shared/runs"
    # the job driver sets a stored sweep aside only if asked
    assert env["env_vars"]["POWERSWEEP_REPLACE"] == "0"
    assert runtime_env(spec, "/shared/runs", replace_sweep=True)["env_vars"]["POWERSWEEP_REPLACE"] == "1"


def test_a_regular_install_sends_its_package_as_a_py_module_and_a_checkout_its_tree(tmp_path):
    # A wheel's layout: the libraries inside powersweep/, the folder above cluster/ is the package.
    package = tmp_path / "site-packages" / "powersweep"
    for path in ("job_driver.py", "cluster/jobs.py", "sweeps/plan.py"):
        (package / path).parent.mkdir(parents=True, exist_ok=True)
        (package / path).touch()
    assert job_code(str(package))["py_modules"] == [str(package)]
    assert "working_dir" not in job_code(str(package))
    # A checkout's layout: the libraries beside powersweep/, the folder above cluster/ is the checkout.
    checkout = tmp_path / "checkout"
    for path in ("powersweep/job_driver.py", "cluster/jobs.py", "sweeps/plan.py", "pyproject.toml"):
        (checkout / path).parent.mkdir(parents=True, exist_ok=True)
        (checkout / path).touch()
    assert job_code(str(checkout)) == {"working_dir": str(checkout), "excludes": job_code()["excludes"]}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["submit", "SPEC", "--address", "http://127.0.0.1:9"], "storage 'runs/tiny' is a relative path"),
        (
            ["submit", "SPEC", "--address", "http://127.0.0.1:9", "--storage", "/shared/r"],
            "no Ray dashboard answers",
        ),
        (
            ["status", "job-1", "--address", "http://127.0.0.1:9"],
            "no Ray dashboard answers at http://127.0.0.1:9",
        ),
        (["stop", "job-1", "--address", "http://127.0.0.1:9"], "no Ray dashboard answers"),
    ],
)
def test_cluster_commands_fail_with_one_line_and_exit_2(tmp_path, capsys, argv, message):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    assert main([str(spec) if a == "SPEC" else a for a in argv]) == 2  # port 9 (discard): nothing listens
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
