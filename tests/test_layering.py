"""The packages' boundaries, read from every import statement of every module (function-level imports too).

Data flows spec -> plan -> trials -> proxy runs -> rows -> Parquet -> analysis. Everything imports as
`powersweep.<name>`; the entry points (the command line and the Ray job driver, in `powersweep/`) sit on top,
only parse and dispatch, and no library imports them. At the bottom, `powersweep.rows` declares the result
row, `powersweep.store_layout` the store's folders and file names, and `powersweep.file_threads` reads many
files at once, which every layer shares; they import none of them.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("proxy_models", "sweeps", "analysis", "cluster")  # folders at the top of the repository
ENTRY = ("powersweep.cli", "powersweep.job_driver")
# The bottom: the result row's one declaration, the store's layout (folders, file names) and reading many
# files at once: every layer may import them, and they import nothing of the project.
BASES = ("powersweep.rows", "powersweep.store_layout", "powersweep.file_threads")
# What each library may not import (a name or any of its submodules).
FORBIDDEN = {
    "powersweep.proxy_models": (
        "ray",
        "optuna",
        "powersweep.sweeps",
        "powersweep.analysis",
        "powersweep.cluster",
    ),
    "powersweep.analysis": (
        "torch",
        "ray",
        "optuna",
        "powersweep.proxy_models",
        "powersweep.sweeps",
        "powersweep.cluster",
    ),
    "powersweep.sweeps": ("powersweep.cluster",),
    "powersweep.cluster": (),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join(parts if parts[0] == "powersweep" else ("powersweep", *parts))


def imported(path: Path) -> set[str]:
    """Every module `path` imports, at any depth of the file: `from a.b import c` gives a.b and a.b.c."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: a relative import; the packages use absolute ones"
            names.add(node.module)
            # `from powersweep import cli`
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules() -> dict[str, set[str]]:
    paths = [p for folder in (*LIBRARIES, "powersweep") for p in sorted((ROOT / folder).rglob("*.py"))]
    return {module_name(p): imported(p) for p in paths}


def within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def library_modules() -> dict[str, set[str]]:
    return {name: names for name, names in modules().items() if not any(within(name, e) for e in ENTRY)}


def test_the_walk_sees_the_imports_it_checks():
    # Guards the checks below against passing vacuously: these imports exist today.
    found = modules()
    assert "argparse" in found["powersweep.cli"]
    assert "powersweep.cli.cluster_commands" in found["powersweep.cli"]
    assert "powersweep.cluster.nodes.check_nodes" in found["powersweep.cli.sweep_commands"]
    assert "torch" in found["powersweep.proxy_models.model"]
    assert "powersweep.sweeps.sweep.submit" in found["powersweep.job_driver"]
    assert len(library_modules()) > 40


def test_every_library_module_belongs_to_a_library():
    # A module outside the four libraries and the entry points would escape every check below.
    strays = sorted(
        name
        for name in library_modules()
        if name not in ("powersweep", *BASES) and not any(within(name, package) for package in FORBIDDEN)
    )
    assert strays == []


def test_the_package_root_imports_no_library():
    # `import powersweep.sweeps` runs powersweep/__init__.py first: it must stay as light as an empty file.
    assert {n for n in modules()["powersweep"] if within(n, "powersweep") or n in ("torch", "ray")} == set()


@pytest.mark.parametrize("base", BASES)
def test_the_bottom_modules_import_nothing_of_the_project_nor_a_numeric_library(base):
    heavy = ("torch", "pyarrow", "pandas")
    assert {n for n in modules()[base] if within(n, "powersweep") or n.split(".")[0] in heavy} == set()


def test_argparse_only_in_the_entry_points():
    offenders = sorted(name for name, names in library_modules().items() if "argparse" in names)
    assert offenders == []


def test_no_library_module_imports_an_entry_point():
    offenders = sorted(
        name for name, names in library_modules().items() if any(within(n, e) for n in names for e in ENTRY)
    )
    assert offenders == []


def test_every_import_of_the_project_uses_its_one_name():
    # `import sweeps` would find another distribution's package of that name (W&B's sweeps extra has one).
    paths = [
        p
        for folder in (*LIBRARIES, "powersweep", "tests", "benchmarks")
        for p in (ROOT / folder).rglob("*.py")
    ]
    bare = sorted(
        f"{p.relative_to(ROOT)} imports {n}"
        for p in paths
        for n in imported(p)
        if n.split(".")[0] in LIBRARIES
    )
    assert bare == []


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_libraries_import_nothing_upstream(package):
    offenders = []
    for name, names in library_modules().items():
        if not within(name, package):
            continue
        bad = {n for n in names for f in FORBIDDEN[package] if within(n, f)}
        offenders += [f"{name} imports {n}" for n in sorted(bad)]
    assert offenders == []


def test_the_cluster_job_entry_point_reports_like_the_command_line():
    # The job driver prints the same report as `powersweep submit`, from the library, not the command line.
    assert "powersweep.sweeps.outcome.print_report" in modules()["powersweep.job_driver"]
