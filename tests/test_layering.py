"""The packages' boundaries, read from every import statement of every module (function-level imports too).

Data flows spec -> plan -> trials -> proxy runs -> rows -> Parquet -> analysis; the command line, `sweeps/cli/`,
sits on top and only parses and dispatches.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sweeps", "proxy_models", "analysis", "cluster")
CLI = "sweeps.cli"
# What each library may not import (a name or any of its submodules); sweeps.cli is checked for all of them.
FORBIDDEN = {
    "proxy_models": ("ray", "sweeps", "analysis", "cluster", "optuna"),
    "analysis": ("torch", "ray", "proxy_models", "sweeps", "cluster", "optuna"),
    "sweeps": ("cluster",),
    "cluster": (),
}
ALLOWED = {"analysis": {"sweeps.schema"}}  # analysis reads the store's schema (it imports no torch or Ray)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file: `from a.b import c` gives a.b and a.b.c."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; the packages use absolute ones"
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from sweeps import cli`
    return names


def modules() -> dict[str, set[str]]:
    return {module_name(p): imported(p) for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def library_modules() -> dict[str, set[str]]:
    return {name: names for name, names in modules().items() if not within(name, CLI)}


def test_the_walk_sees_the_imports_it_checks():
    # Guards the checks below against passing vacuously: these imports exist today.
    found = modules()
    assert "argparse" in found["sweeps.cli"]
    assert "sweeps.cli.cluster_commands" in found["sweeps.cli"]
    assert "cluster.storage_check.check_shared_storage" in found["sweeps.cli.sweep_commands"]
    assert "torch" in found["proxy_models.model"]
    assert len(library_modules()) > 40


def test_argparse_only_in_the_command_line():
    offenders = sorted(name for name, names in library_modules().items() if "argparse" in names)
    assert offenders == []


def test_no_library_module_imports_the_command_line():
    offenders = sorted(name for name, names in library_modules().items() if any(within(n, CLI) for n in names))
    assert offenders == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_libraries_import_nothing_upstream(package):
    offenders = []
    for name, names in library_modules().items():
        if not within(name, package):
            continue
        allowed = ALLOWED.get(package, set())
        bad = {n for n in names for f in FORBIDDEN[package] if within(n, f)
               and not any(within(n, a) for a in allowed)}
        offenders += [f"{name} imports {n}" for n in sorted(bad)]
    assert offenders == []


def test_the_cluster_job_entry_point_reports_like_the_command_line():
    # The job driver prints the same report as `powersweep submit`, from the library, not the command line.
    assert "sweeps.outcome.print_report" in modules()["cluster.driver"]
