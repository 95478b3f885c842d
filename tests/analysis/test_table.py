import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table


def _runs(n: int = 6, **extra) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "model": "36M",
            "tokens": 2e9,
            "batch_size": 64,
            "lr": np.geomspace(1e-3, 3e-2, n),
            "loss_eval": np.linspace(3.2, 3.0, n),
        }
    )
    return frame.assign(**extra)


def test_minimal_table_gets_defaults():
    table = load_table(_runs())
    assert set(table["status"]) == {"ok"}
    assert set(table["schedule"]) == {"unknown"}  # what the table does not say is not guessed
    assert set(table["parametrisation"]) == {"unknown"}
    assert table["seed"].tolist() == [0] * 6
    assert table["batch_size"].dtype == np.int64
    assert table.attrs["skipped_files"] == []


def test_nan_and_inf_losses_become_diverged_and_failed_stays_failed():
    frame = _runs(
        loss_eval=[3.1, np.nan, np.inf, 3.0, 3.0, 3.0], status=["ok", "ok", "ok", "failed", "ok", "diverged"]
    )
    table = load_table(frame)
    assert table["status"].tolist() == ["ok", "diverged", "diverged", "failed", "ok", "diverged"]


def test_missing_column_error_names_it_and_the_fix():
    with pytest.raises(AnalysisError) as err:
        load_table(_runs().drop(columns=["lr"]))
    message = str(err.value)
    assert "column 'lr' not found in table (columns: model, tokens, batch_size, loss_eval)" in message
    assert "--map lr=YOUR_COLUMN" in message


def test_mapping_renames_wandb_style_columns():
    frame = _runs().rename(columns={"lr": "config.lr", "loss_eval": "eval/loss", "batch_size": "config.bs"})
    table = load_table(frame, mapping={"lr": "config.lr", "loss": "eval/loss", "batch_size": "config.bs"})
    assert table["lr"].iloc[0] == pytest.approx(1e-3)
    assert table["loss_eval"].iloc[-1] == pytest.approx(3.0)


def test_mapping_to_absent_column_and_unknown_field_are_errors():
    with pytest.raises(AnalysisError, match="column 'learning_rate' \\(mapped to 'lr'\\) not found"):
        load_table(_runs(), mapping={"lr": "learning_rate"})
    with pytest.raises(AnalysisError, match="unknown field 'lrr'"):
        load_table(_runs(), mapping={"lrr": "lr"})


def test_non_numeric_value_is_named_with_a_sample():
    frame = _runs().astype({"lr": object})
    frame.loc[2, "lr"] = "3e-3x"
    with pytest.raises(AnalysisError) as err:
        load_table(frame)
    assert "column 'lr'" in str(err.value) and "'3e-3x'" in str(err.value) and "row 2" in str(err.value)


def test_numeric_strings_and_nullable_ints_are_read():
    frame = _runs().astype({"lr": str, "batch_size": "Int64"})
    table = load_table(frame)
    assert table["lr"].iloc[0] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "column, value, fix",
    [("lr", -1.0, "positive"), ("batch_size", 0, "positive"), ("tokens", np.nan, "empty")],
)
def test_bad_values_are_errors(column, value, fix):
    frame = _runs()
    frame.loc[1, column] = value
    with pytest.raises(AnalysisError, match=fix):
        load_table(frame)


def test_unknown_status_is_an_error():
    with pytest.raises(AnalysisError, match="'exploded'"):
        load_table(_runs(status="exploded"))


def test_batch_in_tokens_is_converted_to_sequences():
    frame = _runs(batch_size=64 * 2048)
    assert load_table(frame, batch_unit="tokens", seq_len=2048)["batch_size"].iloc[0] == 64
    assert load_table(frame.assign(seq_len=4096), batch_unit="tokens")["batch_size"].iloc[0] == 32
    with pytest.raises(AnalysisError, match="--seq-len"):
        load_table(frame, batch_unit="tokens")
    with pytest.raises(AnalysisError, match="not a whole number of sequences"):
        load_table(frame, batch_unit="tokens", seq_len=3000)


def test_csv_and_parquet_files_read_the_same(tmp_path):
    frame = _runs(schedule="wsd", seed=1)
    frame.to_csv(tmp_path / "runs.csv", index=False)
    pq.write_table(pa.Table.from_pandas(frame), tmp_path / "runs.parquet")
    from_csv, from_parquet = load_table(tmp_path / "runs.csv"), load_table(tmp_path / "runs.parquet")
    pd.testing.assert_frame_equal(from_csv.drop(columns="run_id"), from_parquet.drop(columns="run_id"))


def test_hive_directory_reads_partitions_and_skips_a_corrupt_file(tmp_path):
    for sweep in ("a", "b"):
        part = tmp_path / f"sweep_id={sweep}"
        part.mkdir()
        pq.write_table(pa.Table.from_pandas(_runs()), part / "part-0.parquet")
    (tmp_path / "sweep_id=b" / "part-1.parquet").write_bytes(b"not parquet at all")
    (tmp_path / "_SUCCESS.csv").write_text("ignored")
    table = load_table(tmp_path)
    assert sorted(set(table["sweep_id"])) == ["a", "b"]
    assert len(table) == 12
    assert len(table.attrs["skipped_files"]) == 1 and "part-1.parquet" in table.attrs["skipped_files"][0]


def _one_by_one(root) -> pd.DataFrame:
    """The directory as pandas reads it file by file: each file, its folders' key=value as columns."""
    frames = []
    for path in sorted(root.rglob("*.parquet")):
        frame = pd.read_parquet(path)
        for folder in path.relative_to(root).parts[:-1]:
            key, _, value = folder.partition("=")
            frame[key] = frame.get(key, value)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_a_directory_of_many_files_reads_as_pandas_reads_each_of_them(tmp_path):
    # Files joined as Arrow and converted once: columns that only some files have, a column stored in the
    # file over its folder's name, ints in one file and floats in another; the same rows and values as
    # pandas gives file by file.
    rng = np.random.default_rng(0)
    for i in range(12):
        folder = tmp_path / f"sweep_id=s{i % 3}" / f"model={'36M' if i % 2 else '12M'}"
        folder.mkdir(parents=True, exist_ok=True)
        frame = _runs(4, seed=i, loss_eval=rng.uniform(3, 4, 4))
        if i % 4 == 0:
            frame = frame.assign(tokens=frame["tokens"].astype(np.int64), power_a=4.6)
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), folder / f"lineage-{i:02d}.parquet")
    table = load_table(tmp_path, tokens_tolerance=0)
    expected = load_table(_one_by_one(tmp_path), tokens_tolerance=0)
    assert len(table) == 48 and sorted(set(table["sweep_id"])) == ["s0", "s1", "s2"]
    assert set(table["model"]) == {"36M"}  # the file's own column wins over model=12M
    assert table["power_a"].notna().sum() == 12
    pd.testing.assert_frame_equal(table, expected, check_like=True)


def test_files_whose_types_arrow_cannot_join_are_read_through_pandas(tmp_path):
    # seed stored as text in one file and as numbers in the others: Arrow refuses to join them, so each
    # file goes through pandas, as a CSV file beside them does, and every row is read in file order.
    pq.write_table(pa.Table.from_pandas(_runs(3, seed=1), preserve_index=False), tmp_path / "a.parquet")
    pq.write_table(pa.Table.from_pandas(_runs(3, seed="2"), preserve_index=False), tmp_path / "b.parquet")
    _runs(3, seed=3).to_csv(tmp_path / "c.csv", index=False)
    table = load_table(tmp_path)
    assert len(table) == 9 and [str(s) for s in table["seed"]] == ["1"] * 3 + ["2"] * 3 + ["3"] * 3


def test_a_stores_folder_reads_its_results_only(tmp_path):
    # Beside results/, a store holds Tune's per-trial progress.csv (under checkpoints/ray/) and trackers'
    # files: tables of the same columns that are not results.
    results = tmp_path / "results" / "sweep_id=a"
    results.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(_runs()), results / "lineage-x.parquet")
    tune = tmp_path / "checkpoints" / "ray" / "a" / "trial"
    tune.mkdir(parents=True)
    _runs().to_csv(tune / "progress.csv", index=False)
    (tmp_path / "tracking").mkdir()
    _runs().to_csv(tmp_path / "tracking" / "metrics.csv", index=False)
    assert len(load_table(tmp_path)) == len(load_table(tmp_path / "results")) == len(_runs())
    assert len(load_table(tune)) == len(_runs())  # read when asked for by name


def test_directory_with_no_readable_file_is_an_error(tmp_path):
    (tmp_path / "x.parquet").write_bytes(b"garbage")
    with pytest.raises(AnalysisError, match="no readable"):
        load_table(tmp_path)


def test_missing_path_and_bad_suffix_are_errors(tmp_path):
    with pytest.raises(AnalysisError, match="does not exist"):
        load_table(tmp_path / "nope.csv")
    (tmp_path / "runs.txt").write_text("a,b\n")
    with pytest.raises(AnalysisError, match="suffix"):
        load_table(tmp_path / "runs.txt")


def test_restated_run_keeps_the_newest_row():
    frame = _runs(2, run_id=["r1", "r1"], created_at=pd.to_datetime(["2024-01-02", "2024-01-01"], utc=True))
    table = load_table(frame)
    assert len(table) == 1 and table["lr"].iloc[0] == pytest.approx(1e-3)


def test_power_only_table_needs_no_lr_but_needs_a_and_b():
    power = _runs().drop(columns="lr").assign(schedule="power", power_a=4.0, power_b=-0.51, lr_max=0.02)
    assert len(load_table(power)) == 6
    with pytest.raises(AnalysisError, match="power_b"):
        load_table(power.assign(power_b=np.nan))


def test_trunk_rows_are_left_out_and_counted():
    frame = _runs(phase=["final", "trunk", None, "trunk", "final", np.nan])
    table = load_table(frame)
    assert len(table) == 4 and table.attrs["trunk_rows_dropped"] == 2
    assert table["lr"].tolist() == pytest.approx(frame["lr"][[0, 2, 4, 5]].tolist())
    assert load_table(_runs()).attrs["trunk_rows_dropped"] == 0  # tables without the column: every row


def test_unknown_phase_is_named():
    with pytest.raises(AnalysisError, match="column 'phase' has value\\(s\\) \\['trnk'\\]"):
        load_table(_runs(phase="trnk"))


def test_analysis_of_a_table_with_trunk_rows_equals_that_without_and_says_so():
    grid = SweepGrid(
        models=(("12M", 12e6), ("36M", 36e6)),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64, 128),
        lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
    )
    final = synthetic_table(PlantedLaw(), grid, seed=3)
    trunk = final.assign(
        phase="trunk",
        loss_eval=final["loss_eval"] - 0.5,  # lower: would win every optimum
        run_id=[f"t{i}" for i in range(len(final))],
    )
    with_trunk = analyze(pd.concat([final.assign(phase="final"), trunk], ignore_index=True), n_boot=0)
    alone = analyze(final, n_boot=0)
    pd.testing.assert_frame_equal(with_trunk.cells, alone.cells)
    assert f"left out {len(trunk)} trunk rows" in " ".join(with_trunk.notes)
    assert not any("trunk" in note for note in alone.notes)


def test_schedule_and_parametrisation_come_from_the_table_or_the_arguments():
    stated = load_table(_runs(), schedule="WSD", parametrisation="sp")
    assert set(stated["schedule"]) == {"wsd"} and set(stated["parametrisation"]) == {"sp"}
    kept = load_table(_runs(schedule="cosine", parametrisation="muP"), schedule="wsd", parametrisation="sp")
    assert set(kept["schedule"]) == {"cosine"} and set(kept["parametrisation"]) == {"mup"}  # the table wins
    with pytest.raises(AnalysisError, match="parametrisation='ntk' in row 0: must be 'mup' or 'sp'"):
        load_table(_runs(parametrisation="ntk"))


@pytest.mark.parametrize(
    ("run_id", "named"), [([f"r{i}" for i in range(6)], "run 'r2' (row 2)"), (None, "row 2")]
)
def test_a_negative_loss_is_refused_naming_the_run(run_id, named):
    frame = _runs(loss_eval=[3.2, 3.1, -3.0, 3.0, 3.0, 3.0])
    frame = frame if run_id is None else frame.assign(run_id=run_id)
    with pytest.raises(AnalysisError) as err:
        load_table(frame)
    assert f"loss_eval=-3 in {named}" in str(err.value) and "--map loss=COLUMN" in str(err.value)


@pytest.mark.parametrize("status", ["ok", "diverged", "failed"])
def test_minus_inf_loss_is_no_divergence_but_an_error(status):
    frame = _runs(loss_eval=[3.2, 3.1, 3.05, 3.0, 3.0, -np.inf], status=["ok"] * 5 + [status])
    with pytest.raises(AnalysisError, match="loss_eval=-inf in row 5"):
        load_table(frame)


def test_nan_and_inf_loss_of_a_diverged_run_are_kept():
    frame = _runs(loss_eval=[3.2, 3.1, 3.0, 3.0, np.nan, np.inf], status=["ok"] * 4 + ["diverged"] * 2)
    table = load_table(frame)
    assert table["status"].tolist() == ["ok"] * 4 + ["diverged"] * 2
    assert np.isnan(table["loss_eval"].iloc[4]) and table["loss_eval"].iloc[5] == np.inf


def test_a_negative_loss_no_longer_marks_its_cell_diverged():
    # It used to pass as the cell's best loss, making every other run a 'blow-up' above 1.5x of it.
    table = synthetic_table(
        PlantedLaw(), SweepGrid(models=(("36M", 36e6),), tokens=(2e9,), batch_sizes=(64,)), seed=0
    )
    table.loc[3, "loss_eval"] = -3.0
    with pytest.raises(AnalysisError, match="loss_eval=-3 in run 'synthetic-3' \\(row 3\\)"):
        analyze(table, n_boot=0)
