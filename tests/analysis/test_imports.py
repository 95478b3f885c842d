import subprocess
import sys
from pathlib import Path

from powersweep import analysis

FORBIDDEN = ("torch", "ray", "powersweep.proxy_models", "powersweep.sweeps", "matplotlib.pyplot")


def test_analysis_imports_nothing_upstream():
    # A fresh interpreter: this test process may have imported anything.
    code = (
        "import sys, powersweep.analysis.report, powersweep.analysis.plots, powersweep.analysis.synthetic; "
        f"print(sorted(m for m in sys.modules if m in {FORBIDDEN!r} or "
        f"m.startswith({tuple(f + '.' for f in FORBIDDEN)!r})))"
    )
    root = Path(analysis.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_public_names_are_exported():
    assert 5 <= len(analysis.__all__) <= 15
    for name in analysis.__all__:
        assert getattr(analysis, name).__doc__, name


def test_the_command_layer_imports_no_numeric_library():
    # `powersweep analyze --help` must not pay for pandas, scipy or matplotlib.
    heavy = ("pandas", "scipy", "matplotlib", "numpy", "pyarrow")
    code = (
        "import sys, powersweep.analysis, powersweep.cli.analysis_commands; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{heavy!r}))"
    )
    root = Path(analysis.__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_command_layer_defaults_match_the_library():
    from powersweep.analysis import pipeline, table
    from powersweep.cli import analysis_commands as commands

    assert commands.BATCH_UNITS == table.BATCH_UNITS
    assert commands.DIVERGE_FACTOR == table.DIVERGE_FACTOR == pipeline.Settings().diverge_factor
    assert commands.BAND == pipeline.Settings().band_eps
    assert commands.TOKENS_TOLERANCE == pipeline.Settings().tokens_tolerance
