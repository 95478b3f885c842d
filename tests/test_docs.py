"""The documentation site: its generated pages are what the generators write now, the spec's JSON Schema
accepts every shipped spec and refuses a misspelt key, and the site builds offline with warnings as errors."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from powersweep.sweeps.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "sweeps" / "specs").glob("*.yaml"))


def _generator():
    spec = importlib.util.spec_from_file_location("gen_reference", ROOT / "docs" / "gen_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads((ROOT / "docs" / "spec.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_generated_pages_are_up_to_date():
    for path, text in _generator().pages().items():
        assert path.read_text() == text, f"{path.relative_to(ROOT)} is stale: run make docs"


def test_every_spec_field_has_a_description():
    schema = json.loads((ROOT / "docs" / "spec.schema.json").read_text())
    sections = [schema, *schema["$defs"].values()]
    undescribed = [
        key for s in sections for key, prop in s["properties"].items() if not prop.get("description")
    ]
    assert not undescribed


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_the_schema_accepts_every_shipped_spec(validator, path):
    load_spec(str(path))  # the loader accepts it too
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors


@pytest.mark.parametrize("where", ["top", "search", "train", "train.data", "run"])
def test_the_schema_refuses_a_misspelt_key(validator, where):
    spec = yaml.safe_load((ROOT / "sweeps" / "specs" / "cpu-quick.yaml").read_text())
    section = spec
    for part in [] if where == "top" else where.split("."):
        section = section.setdefault(part, {})
    section["warmup_token" if where == "train" else "sede"] = 1
    assert not validator.is_valid(spec)


def test_the_schema_checks_types_and_ranges(validator):
    spec = yaml.safe_load((ROOT / "sweeps" / "specs" / "cpu-quick.yaml").read_text())
    assert validator.is_valid({**spec, "search": {**spec["search"], "tokens": ["2B", 5e5, "1e-3"]}})
    for bad in ({"tokens": ["two"]}, {"lr": [-1e-3]}, {"batch_size": [4.5]}, {"mode": "random"}):
        assert not validator.is_valid({**spec, "search": {**spec["search"], **bad}}), bad
    assert not validator.is_valid({**spec, "train": {**spec["train"], "beta1": 1.0}})
    assert not validator.is_valid({**spec, "run": {**spec["run"], "pack": "many"}})


def test_the_site_builds_offline_with_warnings_as_errors(tmp_path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")
    assert mkdocs, "mkdocs is missing: pip install -e '.[docs]'"
    done = subprocess.run(
        [mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "site" / "reference" / "spec" / "index.html").exists()
