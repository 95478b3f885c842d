import argparse
import json

import numpy as np
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_power_table, synthetic_table
from powersweep.cli.analysis_commands import add_analyze_parser, add_predict_parser, parse_mapping

GRID = SweepGrid(
    models=(("36M", 36e6),),
    tokens=(2e9, 8e9, 32e9, 128e9),
    batch_sizes=(32, 64, 128),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="powersweep")
    sub = parser.add_subparsers(dest="command", required=True)
    add_analyze_parser(sub)
    add_predict_parser(sub)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def wandb_csv(tmp_path_factory):
    """A W&B-style export: other column names, batch size in tokens, loss under 'eval/loss'."""
    table = synthetic_table(PlantedLaw(), GRID, seed=4)
    table = table.assign(batch_tokens=table["batch_size"] * 4096).drop(columns=["batch_size", "seq_len"])
    table = table.rename(
        columns={
            "lr": "config.lr",
            "loss_eval": "eval/loss",
            "tokens": "config.tokens",
            "model": "config.model",
        }
    )
    path = tmp_path_factory.mktemp("csv") / "export.csv"
    table.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def analyzed(wandb_csv, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    argv = [
        "analyze",
        str(wandb_csv),
        "--map",
        "lr=config.lr",
        "batch_size=batch_tokens",
        "tokens=config.tokens",
        "model=config.model",
        "loss=eval/loss",
        "--batch-unit",
        "tokens",
        "--seq-len",
        "4096",
        "--out",
        str(out),
        "--bootstrap",
        "200",
        "--no-figures",
    ]
    return argv, out


def test_analyze_writes_everything_and_prints_a_and_b(analyzed, capsys):
    argv, out = analyzed
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    assert f"report:        {out / 'index.html'}" in printed
    assert f"coefficients:  {out / 'coefficients.json'}" in printed
    assert "a = " in printed and "b = -0.5" in printed and "95% CI" in printed
    content = json.loads((out / "coefficients.json").read_text())
    assert content["b_ci"][0] < -0.51 < content["b_ci"][1]
    assert (out / "cells.csv").exists() and (out / "index.html").exists()


def test_predict_prints_lr_opt_with_ci_and_an_lm_engine_snippet(analyzed, capsys):
    argv, out = analyzed
    _run(argv)
    capsys.readouterr()
    assert (
        _run(
            [
                "predict",
                "--coefficients",
                str(out / "coefficients.json"),
                "--batch-size",
                "1024",
                "--tokens",
                "1e12",
                "--seq-len",
                "4096",
                "--lr-max",
                "0.02",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert (
        printed.startswith("lr_opt = ") and "95% CI" in printed and "batch_size = 1024 sequences" in printed
    )
    assert "outside the swept token range" in printed  # 1e12 is beyond the largest swept T
    snippet = json.loads(printed[printed.index("{") :])
    assert snippet["lr_scheduler_args"]["extra_lr_scheduler_args"]["c"] == 1024 * 4096


def test_missing_column_error_names_the_column_and_the_map_fix(wandb_csv, tmp_path):
    with pytest.raises(AnalysisError) as err:
        _run(["analyze", str(wandb_csv), "--out", str(tmp_path), "--no-figures"])
    message = str(err.value)
    assert "'lr'" in message and "not found in table" in message and "config.lr" in message
    assert "--map" in message and "lr=YOUR_COLUMN" in message


def test_mapping_to_a_wrong_column_names_it(wandb_csv, tmp_path):
    with pytest.raises(AnalysisError, match="column 'learning_rate' \\(mapped to 'lr'\\) not found"):
        _run(["analyze", str(wandb_csv), "--map", "lr=learning_rate", "--out", str(tmp_path)])


def test_batch_in_tokens_without_seq_len_is_a_user_error(wandb_csv, tmp_path):
    argv = [
        "analyze",
        str(wandb_csv),
        "--map",
        "lr=config.lr",
        "batch_size=batch_tokens",
        "tokens=config.tokens",
        "model=config.model",
        "loss=eval/loss",
        "--batch-unit",
        "tokens",
        "--out",
        str(tmp_path),
    ]
    with pytest.raises(AnalysisError, match="--seq-len"):
        _run(argv)


def test_malformed_map_item_is_a_user_error():
    assert parse_mapping(["lr=a=b"]) == {"lr": "a=b"}
    with pytest.raises(AnalysisError, match="FIELD=COLUMN"):
        parse_mapping(["lr"])


def test_predict_with_a_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(AnalysisError, match="could not read coefficients file"):
        _run(
            [
                "predict",
                "--coefficients",
                str(tmp_path / "none.json"),
                "--batch-size",
                "64",
                "--tokens",
                "1e9",
            ]
        )


def test_failed_fit_still_writes_the_report_then_raises(tmp_path):
    one_t = synthetic_table(
        PlantedLaw(), SweepGrid(models=(("m", 1e7),), tokens=(2e9,), batch_sizes=(64, 128))
    )
    path = tmp_path / "one.csv"
    one_t.to_csv(path, index=False)
    with pytest.raises(AnalysisError, match="no coefficients written"):
        _run(["analyze", str(path), "--out", str(tmp_path / "out"), "--no-figures"])
    assert (tmp_path / "out" / "index.html").exists()


def test_power_only_table_reports_the_ab_search_and_succeeds(tmp_path, capsys):
    path = tmp_path / "power.csv"
    synthetic_power_table(PlantedLaw(a=4.0, b=-0.51)).to_csv(path, index=False)
    assert (
        _run(["analyze", str(path), "--out", str(tmp_path / "out"), "--no-figures", "--bootstrap", "50"]) == 0
    )
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("power search:"))
    b = float(line.split("b = ")[1].split()[0])
    assert abs(b - (-0.51)) < 0.03  # the planted exponent, recovered
    assert "coefficients:  not written" in out and not (tmp_path / "out" / "coefficients.json").exists()


@pytest.mark.parametrize("command", ["analyze", "predict"])
def test_help_renders_and_names_the_new_options(command, capsys):
    with pytest.raises(SystemExit) as done:
        _parser().parse_args([command, "--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    wanted = {
        "analyze": ("--diverge-factor", "--band", "--parametrisation"),
        "predict": ("--model", "--n-params", "--law"),
    }[command]
    assert all(option in text for option in wanted)


def test_analyze_json_holds_the_paths_and_the_fitted_a_b_with_cis(analyzed, capsys):
    argv, out = analyzed
    assert _run([*argv, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)  # one document: the notes went to stderr
    content = json.loads((out / "coefficients.json").read_text())
    assert document["report"] == str(out / "index.html") and document["cells"] == str(out / "cells.csv")
    assert (
        document["coefficients"] == str(out / "coefficients.json") and document["headline"] == "pooled_gamma"
    )
    [pooled] = document["fits"]
    assert (pooled["a"], pooled["a_ci"], pooled["b"], pooled["b_ci"]) == (
        content["a"],
        content["a_ci"],
        content["b"],
        content["b_ci"],
    )
    assert pooled["b_ci"][0] < -0.51 < pooled["b_ci"][1] and document["power"] is None


def test_analyze_json_with_watch_is_refused(analyzed):
    argv, _ = analyzed
    with pytest.raises(AnalysisError, match="--json prints one document"):
        _run([*argv, "--json", "--watch"])


def test_predict_json_is_the_text_as_numbers(analyzed, capsys):
    argv, out = analyzed
    _run(argv)
    capsys.readouterr()
    predict = ["predict", "--coefficients", str(out / "coefficients.json"), "--batch-size", "1024"]
    predict += ["--tokens", "1T", "--seq-len", "4096"]
    assert _run(predict) == 0
    text = capsys.readouterr().out
    assert _run([*predict, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert text.startswith(
        f"lr_opt = {document['lr_opt']:.4g} (95% CI {document['ci_low']:.4g} to {document['ci_high']:.4g}"
    )
    assert document["tokens"] == 1e12 and document["batch_size"] == 1024
    assert any("outside the swept token range" in note for note in document["notes"])
    assert document["lm_engine"] == json.loads(text[text.index("{") :])
    joint = ["predict", "--coefficients", str(out / "coefficients.json"), "--law", "joint", "--tokens", "16B"]
    assert _run([*joint, "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    assert document["lr_ci"][0] <= document["lr_opt"] <= document["lr_ci"][1] and document["tokens"] == 16e9
