"""Watch mode: the page is re-rendered when, and only when, the results' files change."""

import os

import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.watch import WatchState, render_if_changed, signature, watch
from powersweep.cli.analysis_commands import add_analyze_parser

GRID = SweepGrid(
    models=(("36M", 36e6),),
    tokens=(2e9, 8e9, 32e9),
    batch_sizes=(64,),
    lrs=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1),
)


def _counting_state(path) -> WatchState:
    return WatchState(path, render=lambda: None)


def test_renders_first_then_only_after_a_file_is_added_rewritten_or_removed(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"1")
    state = _counting_state(tmp_path)
    assert render_if_changed(state) and state.renders == 1
    assert not render_if_changed(state)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.parquet").write_bytes(b"2")
    assert render_if_changed(state) and state.renders == 2
    assert not render_if_changed(state)
    (tmp_path / "a.parquet").write_bytes(b"longer")
    assert render_if_changed(state)
    os.utime(tmp_path / "a.parquet", ns=(1, 1))  # same size, other mtime: rewritten in place
    assert render_if_changed(state)
    (tmp_path / "sub" / "b.parquet").unlink()
    assert render_if_changed(state) and state.renders == 5


def test_half_written_and_hidden_files_are_not_a_change(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"1")
    state = _counting_state(tmp_path)
    render_if_changed(state)
    (tmp_path / "b.parquet.tmp").write_bytes(b"partial")
    (tmp_path / ".lock").write_bytes(b"")
    assert not render_if_changed(state)
    (tmp_path / "b.parquet.tmp").rename(tmp_path / "b.parquet")
    assert render_if_changed(state)


def test_a_missing_folder_is_empty_and_a_single_file_is_watched(tmp_path):
    assert signature(tmp_path / "absent") == ()
    path = tmp_path / "t.csv"
    path.write_text("x")
    state = _counting_state(path)
    assert render_if_changed(state) and not render_if_changed(state)
    path.write_text("xy")
    assert render_if_changed(state)


def test_watch_reports_expected_errors_and_goes_on_until_interrupted(tmp_path):
    calls, errors = [], []

    def render():
        calls.append(1)
        raise AnalysisError("too few runs yet")

    def sleep(seconds):
        assert seconds == 0.5
        if len(calls) == 1:
            (tmp_path / "new.parquet").write_bytes(b"x")  # the sweep writes a result between polls
        else:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        watch(
            WatchState(tmp_path, render),
            interval_s=0.5,
            sleep=sleep,
            errors=(AnalysisError,),
            on_error=errors.append,
        )
    assert len(calls) == 2 and [str(e) for e in errors] == ["too few runs yet"] * 2


def _run(argv):
    import argparse

    parser = argparse.ArgumentParser(prog="powersweep")
    add_analyze_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_analyze_watch_writes_a_waiting_page_then_the_report_and_ends_on_ctrl_c(tmp_path, monkeypatch):
    results, out = tmp_path / "results", tmp_path / "out"
    results.mkdir()
    table = synthetic_table(PlantedLaw(), GRID, seed=2)
    pages = []

    def sleep(seconds):
        pages.append((out / "index.html").read_text())
        if len(pages) == 1:  # the sweep writes its results after the first poll
            table.to_parquet(results / "part-0.parquet")
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr("powersweep.analysis.watch.time.sleep", sleep)
    rc = _run(
        [
            "analyze",
            str(results),
            "--out",
            str(out),
            "--watch",
            "--interval",
            "2",
            "--no-figures",
            "--bootstrap",
            "50",
        ]
    )
    assert rc == 0 and len(pages) == 2
    assert "Waiting for results" in pages[0] and "content='2'" in pages[0]
    assert "id='answer'" in pages[1] and "lr(n) = min(" in pages[1] and "content='2'" in pages[1]


def test_watch_interval_must_be_positive(tmp_path):
    with pytest.raises(AnalysisError, match="--interval 0"):
        _run(["analyze", str(tmp_path), "--out", str(tmp_path / "out"), "--watch", "--interval", "0"])
