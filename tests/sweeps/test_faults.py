"""Store faults after a finished sweep, each followed by `resume`: the store, not the lineage checkpoints,
decides what is done, so every planned row ends readable, once, with the losses of an uninterrupted run.

Each fault is tried on the store as the sweep leaves it (a file per lineage) and after `powersweep compact`
(one file for the sweep's rows, one for its curves): a damaged file loses the rows it holds, and their
lineages train again."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
from test_sweep import TINY, submitted

from powersweep.cli import main
from powersweep.store_layout import sources, sources_metadata
from powersweep.sweeps.plan import plan
from powersweep.sweeps.spec import spec_from_dict
from powersweep.sweeps.store import ResultStore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # linux/prctl.h, linux/capability.h


def file_of(storage: str, run_id: str, folder: str = "results", *, sweep_id: str = "tiny") -> str:
    """The file of the sweep's `folder` that holds the row `run_id` (of curves: the lineage `run_id`)."""
    base = os.path.join(storage, folder, f"sweep_id={sweep_id}")
    for name in sorted(os.listdir(base)):
        path = os.path.join(base, name)
        if run_id in sources(name.removesuffix(".parquet"), pq.read_schema(path).metadata):
            return path
    raise AssertionError(f"no file of {base} holds {run_id}")


def drop_row(storage: str, run_id: str, *, sweep_id: str = "tiny") -> None:
    """Lose the row `run_id` and nothing else: its file written again without it (a lineage's file holds its
    other rows too)."""
    path = file_of(storage, run_id, sweep_id=sweep_id)
    table = pq.read_table(path)
    name = os.path.basename(path).removesuffix(".parquet")
    held = sources(name, table.schema.metadata) - {run_id}
    kept = table.filter(pa.compute.not_equal(table.column("run_id"), run_id))
    kept = kept.replace_schema_metadata({**(table.schema.metadata or {}), **sources_metadata(held)})
    pq.write_table(kept, path)


def lineages_in(path: str) -> set[str]:
    """The lineages whose rows (or points) the file holds."""
    return set(pq.read_table(path, columns=["lineage_id"]).column("lineage_id").to_pylist())


def set_aside(storage: str, prefix: str) -> set[str]:
    """Names of the files set aside from the sweep whose names start with `prefix`."""
    uris = ResultStore(storage).set_aside_files(sweep_id="tiny")
    return {os.path.basename(uri) for uri in uris if os.path.basename(uri).startswith(prefix)}


def damage(path: str, fault: str) -> None:
    data = open(path, "rb").read()
    if fault == "deleted":
        os.remove(path)
        return
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2] if fault == "truncated" else os.urandom(len(data)))


def losses(storage: str) -> dict:
    result = ResultStore(storage).read(sweep_id="tiny")
    assert result.duplicates_dropped == 0
    return dict(zip(result.table["run_id"], result.table["loss_eval"]))


def resume(storage: str, capsys) -> tuple[int, str, str]:
    code = main(["resume", storage])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module", params=["lineage files", "compacted"])
def finished(request, tmp_path_factory, local_ray):
    """A finished TINY sweep (2 lineages: 4 budget rows, 4 trunk rows), its losses by run_id, and a function
    that lays its files out as the param says (tests repair the store: each lays it out first)."""
    storage = submitted(tmp_path_factory.mktemp("faults"), TINY)

    def arrange() -> None:
        if request.param == "compacted":
            assert main(["compact", storage]) == 0

    yield storage, losses(storage), arrange
    subprocess.run(["chmod", "-R", "u+w", storage], check=True)


def planned() -> list[str]:
    return sorted(plan(spec_from_dict(TINY)).row_ids)


def assert_repaired(storage: str, reference: dict) -> None:
    now = losses(storage)
    assert sorted(now) == planned()  # every planned row, each once
    assert now == pytest.approx(reference, rel=1e-6)


def row_ids(phase: str) -> list[str]:
    """The planned run_ids of budget results ('final') or trunk evaluations ('trunk')."""
    jobs = plan(spec_from_dict(TINY)).jobs
    return sorted(r for j in jobs for r in (j.run_ids if phase == "final" else j.trunk_run_ids))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "random bytes", "deleted"])
def test_a_damaged_file_is_set_aside_and_its_rows_trained_again(finished, fault, capsys):
    storage, reference, arrange = finished
    arrange()
    victim = {
        "truncated": row_ids("final")[-1],
        "random bytes": row_ids("trunk")[1],
        "deleted": row_ids("final")[0],
    }[fault]
    path = file_of(storage, victim)
    lost = lineages_in(path)
    kept = os.path.basename(path).removesuffix(".parquet") + "."
    aside_before = set_aside(storage, kept)
    damage(path, fault)
    assert main(["status", storage]) == 0
    shown = capsys.readouterr().out
    name = os.path.basename(path)
    assert (name in shown) == (fault != "deleted")  # status names the unreadable file
    assert "runs done" in shown
    code, out, err = resume(storage, capsys)
    assert code == 0, err
    assert ("moved aside an unreadable result file" in err and name in err) == (fault != "deleted")
    assert f"ran {len(lost)} lineage{'' if len(lost) == 1 else 's'} (0 failed)" in out
    assert_repaired(storage, reference)
    assert len(set_aside(storage, kept) - aside_before) == (fault != "deleted")  # kept for a person


@pytest.mark.slow
def test_a_foreign_file_is_skipped_with_a_note_and_left_in_place(finished, capsys):
    storage, reference, arrange = finished
    arrange()
    foreign = os.path.join(storage, "results", "sweep_id=tiny", "notes.parquet")
    pq.write_table(pa.table({"comment": ["not a result row"]}), foreign)
    assert main(["status", storage]) == 0
    assert "notes.parquet" in capsys.readouterr().out
    code, out, err = resume(storage, capsys)
    assert code == 0 and "ran 0 lineages" in out, err
    assert os.path.exists(foreign)  # not ours: kept where it is
    assert_repaired(storage, reference)
    os.remove(foreign)


def without_permission_override() -> None:
    """In the child before exec: root loses the capabilities that let it write read-only files."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def unprivileged_resume(storage: str) -> subprocess.CompletedProcess:
    """`powersweep resume` by a process that file permissions apply to (root's are dropped)."""
    env = {**os.environ, "PYTHONPATH": ROOT, "PYTHONDONTWRITEBYTECODE": "1"}
    drop = without_permission_override if os.geteuid() == 0 else None
    return subprocess.run(
        [sys.executable, "-m", "powersweep.cli", "resume", storage],
        env=env,
        capture_output=True,
        text=True,
        preexec_fn=drop,
        timeout=120,
    )


@pytest.mark.slow
def test_a_read_only_store_is_read_and_a_repair_is_refused_in_one_line(finished, capsys):
    storage, reference, arrange = finished
    arrange()
    victim = file_of(storage, row_ids("final")[1])
    subprocess.run(["chmod", "-R", "a-w", storage], check=True)
    try:
        complete = unprivileged_resume(storage)
        assert complete.returncode == 0 and "ran 0 lineages" in complete.stdout, complete.stderr
        subprocess.run(["chmod", "u+w", os.path.dirname(victim)], check=True)
        os.remove(victim)
        subprocess.run(["chmod", "a-w", os.path.dirname(victim)], check=True)
        refused = unprivileged_resume(storage)
    finally:
        subprocess.run(["chmod", "-R", "u+w", storage], check=True)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert storage in lines[0] and "writable" in lines[0]
    code, out, err = resume(storage, capsys)
    assert code == 0 and "0 failed" in out, err
    assert_repaired(storage, reference)


@pytest.mark.parametrize(
    "content, fragment",
    [
        (b"\x00\xff not json", "its stored spec sweeps/tiny/spec.json cannot be read"),
        (b'{"name": "tiny"}', "is not a valid spec (search is missing"),
    ],
)
def test_a_damaged_stored_spec_says_so_instead_of_no_sweep(tmp_path, capsys, content, fragment):
    spec = tmp_path / "store" / "sweeps" / "tiny" / "spec.json"
    spec.parent.mkdir(parents=True)
    spec.write_bytes(content)
    for command in ("status", "resume"):
        assert main([command, str(tmp_path / "store")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0] and "no sweep" not in err[0], err


def curve_keys(storage: str, lineage_id: str) -> list[tuple]:
    table = ResultStore(storage).read_curve(sweep_id="tiny", name=lineage_id).to_pandas()
    return sorted(zip(table["segment"], table["budget"].fillna(-1.0), table["kind"], table["step"]))


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["truncated", "random bytes"])
def test_a_damaged_curve_is_named_set_aside_and_its_lineage_trained_whole_again(finished, fault, capsys):
    storage, reference, arrange = finished
    arrange()
    job = plan(spec_from_dict(TINY)).jobs[0]
    path = file_of(storage, job.lineage_id, "curves")
    lost = lineages_in(path)  # a compacted curve file holds both lineages
    before = {lineage: curve_keys(storage, lineage) for lineage in lost}
    damage(path, fault)
    os.remove(file_of(storage, job.run_ids[0]))  # and a row of the same lineage: it must train again
    assert main(["status", storage]) == 0
    shown = capsys.readouterr().out
    name = os.path.basename(path)
    assert f"curves: {2 - len(lost)} of 2 lineages stored" in shown and f"{name}: " in shown
    code, out, err = resume(storage, capsys)
    assert code == 0 and "(0 failed)" in out, err
    assert "moved aside an unreadable curve file" in err and name in err
    assert {lineage: curve_keys(storage, lineage) for lineage in lost} == before  # whole: never shorter
    assert_repaired(storage, reference)
    assert main(["status", storage]) == 0
    shown = capsys.readouterr().out
    kept = name.removesuffix(".parquet") + ".curve."
    assert "curves: 2 of 2 lineages stored" in shown and kept in shown  # the broken one, kept
