import json

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.export import (
    FORMULA,
    coefficients,
    lm_engine_snippet,
    predict_joint,
    predict_lr,
    read_coefficients,
    scheduler_coefficients,
    suggest_lr_max,
    write_coefficients,
)
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PlantedLaw, synthetic_table
from powersweep.analysis.table import load_table


@pytest.fixture(scope="module")
def result(paper_table):
    return analyze(paper_table.assign(git_sha="abc123"), n_boot=500, seed=0)


def test_round_trip_through_the_file(result, tmp_path):
    path = write_coefficients(result, tmp_path / "coefficients.json")
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    loaded = read_coefficients(path)
    assert loaded["a"] == result.gamma.pooled.a and loaded["b"] == result.gamma.pooled.b
    assert loaded["formula"] == FORMULA == "lr(n) = min(lr_max, batch_size * a * n**b)"
    from_memory = predict_lr(coefficients(result), batch_size=1024, tokens=1e12)
    assert predict_lr(path, batch_size=1024, tokens=1e12) == from_memory
    assert len(loaded["bootstrap"]["a"]) == len(loaded["bootstrap"]["b"]) == len(result.gamma.pooled.boot_b)


def test_prediction_matches_the_formula_and_covers_the_planted_value(result):
    content = coefficients(result)
    pred = predict_lr(content, batch_size=1024, tokens=1e12)
    assert pred.lr_opt == pytest.approx(1024 * content["a"] * 1e12 ** content["b"])
    assert pred.ci_low < 1024 * 4.6 * 1e12**-0.51 < pred.ci_high
    assert pred.ci_method == "bootstrap" and pred.extrapolation == pytest.approx(1e12 / 256e9)


def test_covariance_interval_is_used_without_samples_and_agrees_roughly(result):
    content = coefficients(result)
    boot = predict_lr(content, batch_size=256, tokens=64e9)
    cov = predict_lr({k: v for k, v in content.items() if k != "bootstrap"}, batch_size=256, tokens=64e9)
    assert cov.ci_method == "covariance" and cov.lr_opt == boot.lr_opt
    assert np.log(cov.ci_high / cov.ci_low) == pytest.approx(np.log(boot.ci_high / boot.ci_low), rel=0.5)


def test_units_and_provenance(result):
    content = coefficients(result)
    assert content["units"]["batch_size"] == "sequences" and content["units"]["seq_len"] == 4096
    prov = content["provenance"]
    assert prov["sweep_ids"] == ["synthetic"] and prov["git_sha"] == "abc123"
    assert prov["n_runs"] == len(result.table) and prov["n_cells_used"] == int(result.cells["used"].sum())
    assert set(content["per_model"]) == {"12M", "36M", "121M"}


def test_lr_max_is_half_the_smallest_diverged_lr_at_the_largest_batch_size(result):
    diverged = result.table[result.table["status"].eq("diverged")]
    at_largest = diverged.loc[diverged["batch_size"].eq(diverged["batch_size"].max()), "lr"]
    content = coefficients(result)
    assert content["lr_max"] == pytest.approx(at_largest.min() / 2)
    assert content["lr_max"] > diverged["lr"].min() / 2  # not capped by small-batch divergences
    assert content["diverged_lr_by_batch_size"][str(diverged["batch_size"].max())] == at_largest.min()
    calm = load_table(synthetic_table(PlantedLaw(diverge_ratio=1e9)))
    assert suggest_lr_max(calm) is None


def test_lm_engine_snippet_reproduces_the_power_schedule(result):
    content = coefficients(result)
    snippet = lm_engine_snippet(content, batch_size=1024, seq_len=4096, lr_max=0.02)
    args = snippet["lr_scheduler_args"]["extra_lr_scheduler_args"]
    assert args == {"a": 1024 * content["a"], "b": content["b"], "c": 1024 * 4096}
    assert snippet["optimizer_args"]["class_args"]["lr"] == 0.02
    assert snippet["lr_scheduler_args"]["lr_decay_style"] == "power"
    steps = np.array([10, 1_000, 100_000])
    # its PowerScheduler, lr in lr units
    lm_engine = np.minimum(0.02, args["a"] * (steps * args["c"]) ** args["b"])
    tokens = steps * 1024 * 4096
    paper = np.minimum(0.02, 1024 * content["a"] * tokens ** content["b"])
    assert lm_engine == pytest.approx(paper, rel=1e-12)


def test_lm_engine_snippet_needs_an_lr_max():
    content = {"a": 4.6, "b": -0.51, "lr_max": None}
    with pytest.raises(AnalysisError, match="--lr-max 0.02"):
        lm_engine_snippet(content, batch_size=1024, seq_len=4096)
    snippet = lm_engine_snippet(content, batch_size=8, seq_len=16, lr_max=0.01)
    assert snippet["optimizer_args"]["class_args"]["lr"] == 0.01
    with pytest.raises(AnalysisError, match="seq_len=0"):
        lm_engine_snippet(content, batch_size=8, seq_len=0, lr_max=0.01)


def test_bad_files_and_arguments_are_user_errors(tmp_path):
    bad = tmp_path / "c.json"
    bad.write_text(json.dumps({"b": -0.5}))
    with pytest.raises(AnalysisError, match="key 'a' is None"):
        read_coefficients(bad)
    bad.write_text("{not json")
    with pytest.raises(AnalysisError, match="could not read coefficients.*that `powersweep analyze` wrote"):
        read_coefficients(bad)
    with pytest.raises(AnalysisError, match="tokens=-1"):
        predict_lr({"a": 4.6, "b": -0.51}, batch_size=64, tokens=-1)
    assert np.isnan(predict_lr({"a": 4.6, "b": -0.51}, batch_size=64, tokens=1e9).ci_low)


def test_failed_fit_writes_no_coefficients():
    one_t = pd.DataFrame(
        {
            "model": "m",
            "tokens": 1e9,
            "batch_size": 64,
            "lr": np.geomspace(1e-3, 1e-1, 7),
            "loss_eval": 3 + 0.05 * np.log(np.geomspace(1e-3, 1e-1, 7) / 0.01) ** 2,
        }
    )
    with pytest.raises(AnalysisError, match="gamma fit failed"):
        coefficients(analyze(one_t, n_boot=0))


def test_the_joint_law_is_exported_with_intervals_and_ranges_and_predicts(result):
    content = coefficients(result)
    joint = content["joint_law"]
    assert joint["band"] == 0.0025 and set(joint) >= {"lr", "batch", "gamma"}  # gamma: a muP table
    lr = joint["lr"]
    assert lr["ranges"]["N"] == [12e6, 121e6] and lr["ranges"]["T"] == [2e9, 256e9]
    assert lr["ci"]["ln_T"][0] < lr["coef"]["ln_T"] < lr["ci"]["ln_T"][1]
    low, high = joint["gamma"]["ci"]["ln_T"]
    assert low < -0.51 < high
    pred = predict_joint(content, tokens=32e9, n_params=36e6)
    assert (
        pred.lr_ci[0] < pred.lr_opt < pred.lr_ci[1] and pred.batch_ci[0] < pred.batch_opt < pred.batch_ci[1]
    )
    with pytest.raises(AnalysisError, match="inside its fitted range"):
        predict_joint(content, tokens=32e9, n_params=1e9)
    assert any("extrapolation" in note for note in predict_joint(content, tokens=1e12, n_params=36e6).notes)


def test_the_scheduler_snippet_follows_the_law_that_answers(result):
    content = coefficients(result)
    assert scheduler_coefficients(content, model=None, batch_size=64)["a"] == content["a"]
    mine = scheduler_coefficients(content, model="36M", batch_size=64)
    assert (mine["a"], mine["b"]) == (content["per_model"]["36M"]["a"], content["per_model"]["36M"]["b"])
    bent = content | {
        "batch_laws": {
            "36M": {
                "c": 0.01,
                "alpha": 0.5,
                "beta": -0.4,
                "linear": False,
                "batch_range": [32, 512],
                "tokens_range": [2e9, 256e9],
            }
        }
    }
    law = scheduler_coefficients(bent, model="36M", batch_size=64)
    assert 64 * law["a"] * 1e10 ** law["b"] == pytest.approx(0.01 * 64**0.5 * 1e10**-0.4)
