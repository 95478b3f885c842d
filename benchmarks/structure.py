"""The code's shape, read from the syntax trees of a checkout (this one, or others given as paths).

Prints, per checkout: modules and lines per package, the largest classes, the places each training setting of
the spec is declared (class fields of that name) and copied (`name=<something>.name`), and the branches on
the sweep mode in the driver and the planner (`if`/conditional tests naming jobs, studies, searches or a
mode).

    python benchmarks/structure.py [CHECKOUT ...]
"""

from __future__ import annotations

import argparse
import ast
import statistics
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("proxy_models", "sweeps", "analysis", "cluster", "powersweep")
MODE_WORDS = ("jobs", "studies", "searches", "mode", "adaptive", "Study", "Search")


def library_files(root: Path) -> dict[str, list[Path]]:
    return {p: sorted((root / p).rglob("*.py")) for p in PACKAGES if (root / p).is_dir()}


def classes(path: Path) -> list[ast.ClassDef]:
    return [n for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ClassDef)]


def fields(cls: ast.ClassDef) -> list[str]:
    return [s.target.id for s in cls.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]


def spec_settings() -> list[str]:
    """The keys of the spec's `train:` and `run:` sections (this checkout's; other checkouts are read for the
    places that declare the same names)."""
    from powersweep.sweeps.spec import RunSpec, TrainSpec

    return sorted({*TrainSpec.model_fields, *RunSpec.model_fields} - {"data"})


def declarations(files: list[Path]) -> Counter:
    return Counter(f for path in files for cls in classes(path) for f in set(fields(cls)))


def copies(files: list[Path]) -> Counter:
    """`name=<spec section>.name` keywords (the section as `spec.train`, `spec.run`, `t` or `r`): a spec
    setting handed on field by field."""
    counted = Counter()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.keyword) and isinstance(node.value, ast.Attribute)):
                continue
            base = ast.unparse(node.value.value)
            if node.value.attr == node.arg and (base in ("t", "r") or base.endswith((".train", ".run"))):
                counted[node.arg] += 1
    return counted


def mode_branches(path: Path) -> int:
    if not path.is_file():
        return 0
    source = path.read_text()
    tests = [n.test for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.If, ast.IfExp))]
    return sum(any(w in ast.get_source_segment(source, t) for w in MODE_WORDS) for t in tests)


def report(root: Path) -> None:
    files = library_files(root)
    every = [p for paths in files.values() for p in paths]
    print(f"## {root}")
    for package, paths in files.items():
        lines = sum(len(p.read_text().splitlines()) for p in paths)
        print(f"  {package + '/':15s} {len(paths):3d} modules {lines:6d} lines")
    sized = sorted(
        ((c.end_lineno - c.lineno + 1, f"{p.relative_to(root)}:{c.name}") for p in every for c in classes(p)),
        reverse=True,
    )
    print("  largest classes: " + ", ".join(f"{name} {n} lines" for n, name in sized[:3]))
    settings = spec_settings()
    declared, copied = declarations(every), copies(every)
    places = {s: declared[s] for s in settings}
    print(
        f"  spec settings: {len(settings)}; classes declaring each: median "
        f"{statistics.median(places.values())}, max {max(places.values())} ({max(places, key=places.get)}); "
        f"field-by-field copies: {sum(copied[s] for s in settings)} in all"
    )
    for example in ("warmup_tokens", "decay_fraction", "max_retries"):
        if example in places:
            print(f"    {example}: declared in {places[example]} classes, copied {copied[example]} times")
    for name in ("sweep.py", "plan.py"):
        print(f"  mode branches in sweeps/{name}: {mode_branches(root / 'sweeps' / name)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkouts", nargs="*", type=Path, default=[ROOT])
    for root in parser.parse_args().checkouts:
        report(root.resolve())


if __name__ == "__main__":
    main()
