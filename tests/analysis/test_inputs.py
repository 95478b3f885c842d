"""Malformed tables and options: one line on stderr, exit code 2, nothing written; foreign files skipped."""

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table, mark_blowups
from powersweep.cli import main

GRID = SweepGrid(
    models=(("36M", 36e6),),
    tokens=(2e9, 8e9, 32e9),
    batch_sizes=(32, 64, 128),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)


@pytest.fixture(scope="module")
def runs() -> pd.DataFrame:
    return synthetic_table(PlantedLaw(), GRID, seed=1)


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("value", [1e308, np.inf, -np.inf])
def test_an_absurd_or_infinite_lr_is_one_line(runs, value, tmp_path, capsys):
    bad = runs.copy()
    bad.loc[7, "lr"] = value  # mid-grid: inside a cell's fit window
    bad.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out")], capsys)
    _one_line_error(code, err, "lr=", "row 7")
    assert not (tmp_path / "out").exists()
    assert "np.float64" not in err


def test_every_run_failed_is_one_line(runs, tmp_path, capsys):
    runs.assign(status="failed").to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out")], capsys)
    _one_line_error(code, err, "status 'failed'", f"{len(runs)} runs")


def test_out_naming_an_existing_file_is_one_line_and_the_file_is_kept(runs, tmp_path, capsys):
    runs.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "report").write_text("mine")
    code, _, err = _cli(["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "report")], capsys)
    _one_line_error(code, err, "--out", "is a file")
    assert (tmp_path / "report").read_text() == "mine"


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--bootstrap", "-5", "n_boot"),
        ("--top-k", "0", "top_k"),
        ("--band", "0", "band_eps"),
        ("--diverge-factor", "0.5", "diverge_factor"),
    ],
)
def test_out_of_range_options_are_refused(runs, tmp_path, capsys, flag, value, field):
    runs.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(
        ["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"), flag, value], capsys
    )
    _one_line_error(code, err, f"{field}=")


def test_duplicate_run_ids_are_noted(runs, tmp_path, capsys):
    pd.concat([runs, runs.iloc[:5]]).to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(
        [
            "analyze",
            str(tmp_path / "t.csv"),
            "--out",
            str(tmp_path / "out"),
            "--no-figures",
            "--bootstrap",
            "50",
        ],
        capsys,
    )
    assert code == 0
    assert "5 run id(s) name several rows" in err and runs["run_id"].iloc[0] in err
    assert "5 run id(s) name several rows" in (tmp_path / "out" / "index.html").read_text()
    assert "name several rows" not in "".join(analyze(load_table(runs), n_boot=0).notes)


def test_a_foreign_parquet_file_is_skipped_with_a_note(runs, tmp_path, capsys):
    (tmp_path / "store").mkdir()
    runs.to_parquet(tmp_path / "store" / "rows.parquet")
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "store" / "other.parquet")
    code, _, err = _cli(
        [
            "analyze",
            str(tmp_path / "store"),
            "--out",
            str(tmp_path / "out"),
            "--no-figures",
            "--bootstrap",
            "50",
        ],
        capsys,
    )
    assert code == 0
    assert "skipped file" in err and "other.parquet" in err and "not a results table" in err
    table = load_table(tmp_path / "store")
    assert len(table) == len(runs)


def test_only_foreign_files_still_name_the_missing_columns(tmp_path):
    (tmp_path / "store").mkdir()
    pd.DataFrame({"x": [1, 2]}).to_parquet(tmp_path / "store" / "other.parquet")
    with pytest.raises(Exception, match="not found in table.*--map"):
        load_table(tmp_path / "store")


def test_seq_len_that_contradicts_the_table_is_refused(runs, tmp_path, capsys):
    runs.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(
        ["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out"), "--seq-len", "2048"], capsys
    )
    _one_line_error(code, err, "--seq-len 2048", "4096")


def test_seq_len_states_the_unit_of_a_table_without_one(runs):
    table = load_table(runs.drop(columns=["seq_len"]), seq_len=2048)
    assert table["seq_len"].eq(2048).all()


def test_blown_up_losses_count_as_diverged_whatever_the_status(runs):
    cell = runs["tokens"].eq(2e9) & runs["batch_size"].eq(64)
    top = runs.loc[cell & runs["status"].eq("ok"), "lr"].max()
    blown = runs.copy()
    blown.loc[cell & blown["lr"].eq(top), "loss_eval"] = 7.0  # a plateau far above the cell's best (~3)
    marked = mark_blowups(load_table(blown))
    row = cell & blown["lr"].eq(top)
    assert marked.loc[row.to_numpy(), "status"].eq("diverged").all()
    assert marked.attrs["blowups"] == 1
    assert mark_blowups(load_table(runs)).attrs["blowups"] == 0  # a clean bowl loses nothing
    assert mark_blowups(load_table(blown), diverge_factor=3.0).attrs["blowups"] == 0


def test_a_blown_up_run_bounds_lr_max_and_leaves_the_optimum(runs):
    cell = runs["tokens"].eq(2e9) & runs["batch_size"].eq(64)
    top = runs.loc[cell & runs["status"].eq("ok"), "lr"].max()
    blown = runs.copy()
    blown.loc[cell & blown["lr"].eq(top), "loss_eval"] = 7.0
    result = analyze(load_table(blown), n_boot=0)
    mine = result.cells[result.cells["tokens"].eq(2e9) & result.cells["batch_size"].eq(64)].iloc[0]
    assert mine["n_diverged"] == (runs.loc[cell, "status"].eq("diverged")).sum() + 1
    assert any("--diverge-factor" in note for note in result.notes)


def test_a_negative_loss_is_one_line(runs, tmp_path, capsys):
    bad = runs.copy()
    bad.loc[7, "loss_eval"] = -3.0
    bad.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = _cli(["analyze", str(tmp_path / "t.csv"), "--out", str(tmp_path / "out")], capsys)
    _one_line_error(
        code, err, "loss_eval=-3", "run 'synthetic-7' (row 7)", "never negative", "--map loss=COLUMN"
    )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("header", ["columns", "one name"])
def test_a_huge_header_is_an_error_line_of_readable_length(tmp_path, capsys, header):
    names = [f"c{i:07d}" for i in range(250_000)] if header == "columns" else ["x" * 2_000_000]
    path = tmp_path / "wide.csv"
    path.write_text(",".join(names) + "\n" + ",".join("1" for _ in names) + "\n")  # a header of 2 MB
    assert main(["analyze", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert (
        err.count("\n") == 1
        and len(err) <= 301
        and "not found in table" in err
        and "; pass --map model=YOUR_COLUMN tokens=YOUR_COLUMN" in err  # the fix, past the header
        and err.rstrip().endswith("loss_eval=YOUR_COLUMN")
    )
