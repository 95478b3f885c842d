"""`powersweep plan` needs neither torch nor Ray:
planning reads presets, schedules and token arithmetic only."""

import json
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
