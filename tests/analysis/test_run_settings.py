"""Runs of one cell trained with different settings (warmup, decay, seq_len, settings_id) are refused, never
averaged as seeds (muP and SP runs are analysed apart); uniform settings leave every number as it was."""

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.optimum import lr_points
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_power_table, synthetic_table
from powersweep.analysis.table import load_table
from powersweep.cli import main
from powersweep.sweeps.store import ResultStore

GRID = SweepGrid(
    models=(("36M", 36e6),),
    tokens=(2e9, 8e9, 32e9),
    batch_sizes=(32, 64, 128),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)
ROWS = 3 * 3 * 15  # rows of one synthetic sweep on GRID


def _sweep(name: str, seed: int, **settings) -> pd.DataFrame:
    return synthetic_table(PlantedLaw(), GRID, seed=seed, sweep_id=name).assign(**settings)


@pytest.fixture(scope="module")
def two_warmups() -> pd.DataFrame:
    """One grid trained twice, with 1B and 2B warmup tokens: a sweep submitted again with another warmup."""
    return pd.concat(
        [
            _sweep("warm-1b", 1, warmup_tokens=1e9, settings_id="a" * 16),
            _sweep("warm-2b", 2, warmup_tokens=2e9, settings_id="b" * 16),
        ],
        ignore_index=True,
    )


def test_two_warmups_in_one_cell_are_refused_naming_warmup_tokens(two_warmups):
    with pytest.raises(AnalysisError) as err:
        analyze(two_warmups, n_boot=0)
    message = str(err.value)
    assert f"differ in warmup_tokens 1e+09 ({ROWS} rows), 2e+09 ({ROWS} rows) and settings_id:" in message
    assert "(sweep_id 'warm-1b', 'warm-2b')" in message
    assert "results/sweep_id=NAME" in message and "--replace" in message


def test_the_command_refuses_a_store_of_two_warmups_in_one_line_and_one_sweep_passes(
    two_warmups, tmp_path, capsys
):
    results = tmp_path / "results"
    for name, rows in two_warmups.groupby("sweep_id"):
        (results / f"sweep_id={name}").mkdir(parents=True)
        rows.drop(columns=["sweep_id"]).to_parquet(results / f"sweep_id={name}" / "part-0.parquet")
    code = main(["analyze", str(results), "--out", str(tmp_path / "out"), "--no-figures", "--bootstrap", "0"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    # the fix survives the command line's 300-character cut
    assert "warmup_tokens" in err and "--replace" in err
    assert not (tmp_path / "out").exists()
    code = main(
        [
            "analyze",
            str(results / "sweep_id=warm-1b"),
            "--out",
            str(tmp_path / "out"),
            "--no-figures",
            "--bootstrap",
            "0",
        ]
    )
    assert code == 0


def test_settings_ids_that_differ_alone_are_refused():
    table = pd.concat(
        [_sweep("old", 1, settings_id="0123456789abcdef"), _sweep("new", 2, settings_id="fedcba9876543210")],
        ignore_index=True,
    )
    with pytest.raises(
        AnalysisError,
        match=f"differ in settings_id '0123456789ab...' \\({ROWS} rows\\), "
        f"'fedcba987654...' \\({ROWS} rows\\):",
    ):
        analyze(table, n_boot=0)


@pytest.mark.parametrize(
    ("column", "first", "second", "shown"),
    [
        ("decay_fraction", 0.1, 0.2, "decay_fraction 0.1"),
        ("decay_shape", "linear", "1-sqrt", "decay_shape 'linear'"),
        ("seq_len", 4096, 2048, "seq_len 4096"),
    ],
)
def test_every_settings_column_that_differs_is_named(column, first, second, shown):
    table = pd.concat(
        [_sweep("a", 1, **{column: first}), _sweep("b", 2, **{column: second})], ignore_index=True
    )
    with pytest.raises(AnalysisError, match=f"differ in {shown} \\({ROWS} rows\\)"):
        analyze(table, n_boot=0)


def test_mup_and_sp_runs_of_one_cell_are_analysed_apart_never_averaged():
    # SP's lr_opt moves with width: its runs feed the transfer across widths (test_width_transfer.py)
    mup = _sweep("a", 1, parametrisation="mup")
    both = analyze(pd.concat([mup, _sweep("b", 2, parametrisation="sp")], ignore_index=True), n_boot=0)
    pd.testing.assert_frame_equal(both.cells, analyze(mup, n_boot=0).cells)
    assert any(f"{ROWS} SP rows are left out of it" in note for note in both.notes)


def test_power_runs_of_two_warmups_are_refused():
    power = pd.concat(
        [
            synthetic_power_table(seed=1).assign(warmup_tokens=1e9),
            synthetic_power_table(seed=2, sweep_id="again").assign(warmup_tokens=2e9),
        ],
        ignore_index=True,
    )
    with pytest.raises(AnalysisError, match="differ in warmup_tokens"):
        analyze(power, n_boot=0)


def test_uniform_settings_leave_the_analysis_unchanged():
    base = synthetic_table(PlantedLaw(), GRID, seed=5)
    # old rows
    stated = base.assign(warmup_tokens=1e9, decay_fraction=0.1, decay_shape="linear", settings_id=None)
    before, after = analyze(base, n_boot=0), analyze(stated, n_boot=0)
    pd.testing.assert_frame_equal(before.cells, after.cells)
    assert (after.gamma.pooled.a, after.gamma.pooled.b) == (before.gamma.pooled.a, before.gamma.pooled.b)


def test_null_settings_of_old_rows_do_not_split_a_cell_from_new_ones():
    # Rows written before settings_id and parametrisation existed state nothing: seeds of one warmup still
    # average.
    old = _sweep("s", 1, warmup_tokens=1e9, settings_id=None, parametrisation=None)
    new = _sweep("s", 2, warmup_tokens=1e9, settings_id="a" * 16).assign(
        seed=1, run_id=lambda f: f["run_id"] + "n"
    )
    table = load_table(pd.concat([old, new], ignore_index=True))
    analyze(table, n_boot=0)
    assert set(lr_points(table)["n_runs"]) == {2}


def test_settings_may_differ_between_cells():
    table = _sweep("s", 1)
    # warmup of 100 steps at every batch size
    table = table.assign(warmup_tokens=table["batch_size"] * 4096 * 100.0)
    assert analyze(table, n_boot=0).gamma.pooled.ok


def test_the_schedule_not_analysed_is_not_checked():
    wsd = _sweep("wsd", 1, warmup_tokens=1e9)
    cosine = pd.concat([_sweep("cos-1", 2, warmup_tokens=1e9), _sweep("cos-2", 3, warmup_tokens=2e9)])
    table = pd.concat([wsd, cosine.assign(schedule="cosine")], ignore_index=True)
    assert analyze(table, n_boot=0, schedule="wsd").schedule == "wsd"
    with pytest.raises(AnalysisError, match="differ in warmup_tokens"):
        analyze(table, n_boot=0, schedule="cosine")
    with pytest.raises(AnalysisError, match="mixes schedules"):  # as before: the table must say which one
        analyze(table, n_boot=0)


def _store_rows(table: pd.DataFrame) -> list[dict]:
    """A synthetic sweep's rows as a sweep writes them to its store
    (no NaN: a diverged run's loss is null)."""
    rows = table.drop(columns=["sweep_id"]).assign(
        lineage_id=table["run_id"], tokens=table["tokens"].astype("int64")
    )
    return [
        {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
        for row in rows.to_dict("records")
    ]


def test_after_submit_replace_the_store_holds_one_setting(tmp_path):
    """`submit --replace`, the fix the refusal names, sets the old runs aside;
    analysing the store never reads them."""
    store = ResultStore(str(tmp_path))
    store.write(_store_rows(_sweep("s", 1, warmup_tokens=1e9)), sweep_id="s", name="lin-0")
    assert store.replace_sweep(sweep_id="s")
    again = _sweep("s", 2, warmup_tokens=2e9)
    # new ids
    store.write(_store_rows(again.assign(run_id=again["run_id"] + "-2b")), sweep_id="s", name="lin-1")
    table = load_table(tmp_path)  # the store itself, set-aside/ included
    assert set(table["warmup_tokens"]) == {2e9} and len(table) == ROWS
    assert table.attrs["skipped_files"] == []
    assert analyze(table, n_boot=0).gamma.pooled.ok
