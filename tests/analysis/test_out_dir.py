"""`analyze --out DIR` where DIR cannot be written: one line naming DIR, the reason and the fix, exit code 2,
before the table is read or analysed."""

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.cli import main

ROOT = Path(__file__).resolve().parents[2]
GRID = SweepGrid(
    models=(("36M", 36e6),),
    tokens=(2e9, 8e9),
    batch_sizes=(32, 64),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("table") / "t.csv"
    synthetic_table(PlantedLaw(), GRID, seed=1).to_csv(path, index=False)
    return path


@pytest.fixture
def read_only_dir(tmp_path):
    """A directory nobody may write to:
    mode 555, or for root (whom modes do not stop) the immutable attribute."""
    path = tmp_path / "read-only"
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        undo = functools.partial(path.chmod, 0o755)
    elif (
        shutil.which("chattr")
        and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0
    ):
        undo = functools.partial(subprocess.run, ["chattr", "-i", str(path)], check=True)
    else:
        pytest.skip("root without chattr +i here: no directory is read-only to this test")
    try:
        if _writable(path):
            pytest.skip(f"{path} is still writable on this filesystem")
        yield path
    finally:
        undo()  # else pytest cannot remove tmp_path


def _writable(path: Path) -> bool:
    try:
        tempfile.NamedTemporaryFile(dir=path).close()
        return True
    except OSError:
        return False


def _one_line(code: int, err: str, out: Path | str, *words: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert f"--out {out}:" in lines[0] and "give a writable directory with --out DIR" in lines[0], lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def test_out_under_a_file_is_one_line_from_the_installed_command(table_csv, tmp_path):
    (tmp_path / "a_file").write_text("mine")
    out = tmp_path / "a_file" / "sub"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "powersweep.cli",
            "analyze",
            str(table_csv),
            "--out",
            str(out),
            "--no-figures",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    _one_line(done.returncode, done.stderr, out, "(Not a directory)")
    assert done.stdout == ""  # no report lines: nothing was analysed
    assert (tmp_path / "a_file").read_text() == "mine"


def test_an_unwritable_out_is_found_before_the_table_is_read(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    out = tmp_path / "a_file" / "sub"
    code = main(["analyze", str(tmp_path / "no-such-table.csv"), "--out", str(out)])
    _one_line(code, capsys.readouterr().err, out)  # about --out, not the missing table


@pytest.mark.parametrize("below", ["", "new/deeper"])
def test_a_read_only_directory_or_one_below_it_is_refused(table_csv, read_only_dir, below, capsys):
    out = read_only_dir / below if below else read_only_dir
    code = main(["analyze", str(table_csv), "--out", str(out), "--no-figures"])
    _one_line(code, capsys.readouterr().err, out, "cannot write the report there")
    assert list(read_only_dir.iterdir()) == []


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc")
def test_a_proc_path_is_refused(table_csv, capsys):
    code = main(["analyze", str(table_csv), "--out", "/proc/powersweep-test", "--no-figures"])
    _one_line(code, capsys.readouterr().err, "/proc/powersweep-test")


def test_the_probe_leaves_nothing_behind(tmp_path, capsys):
    existing = tmp_path / "existing"
    existing.mkdir()
    for out in (existing, tmp_path / "new" / "deeper"):
        code = main(["analyze", str(tmp_path / "no-such-table.csv"), "--out", str(out)])
        assert code == 2 and "table path" in capsys.readouterr().err  # the probe passed; the table failed
    assert [p.name for p in tmp_path.iterdir()] == ["existing"] and list(existing.iterdir()) == []
