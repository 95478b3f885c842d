import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.batch_scaling import fit_batch_laws
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.export import coefficients, predict_lr
from powersweep.analysis.optimum import find_optima
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table

LRS = tuple(np.geomspace(1e-5, 0.3, 31).tolist())
TOKENS, BATCHES = (2e9, 8e9, 32e9, 128e9), (32, 64, 128, 256)
SUBLINEAR = {"s": PlantedLaw(a=30.0, batch_exp=0.4), "l": PlantedLaw(a=10.0, batch_exp=0.6)}


def _table(laws: dict[str, PlantedLaw], sizes: dict[str, float], seed: int = 0) -> pd.DataFrame:
    parts = [
        synthetic_table(
            law,
            SweepGrid(models=((name, sizes[name]),), tokens=TOKENS, batch_sizes=BATCHES, lrs=LRS),
            seed=seed + i,
            sweep_id=name,
        )
        for i, (name, law) in enumerate(laws.items())
    ]
    return load_table(pd.concat(parts, ignore_index=True))


@pytest.fixture(scope="module")
def sublinear():
    return analyze(_table(SUBLINEAR, {"s": 1e7, "l": 1e8}), n_boot=400, seed=0)


def test_sublinear_batch_scaling_is_measured_per_model(sublinear):
    for name, law in SUBLINEAR.items():
        fit = sublinear.batch[name]
        assert fit.alpha_ci.contains(law.batch_exp) and not fit.linear
        assert fit.ci["beta"].contains(law.b)


def test_linear_batch_scaling_keeps_alpha_one_inside_its_interval():
    hits = []
    for seed in range(8):
        cells = find_optima(_table({"m": PlantedLaw()}, {"m": 1e7}, seed=seed), n_draws=300, seed=seed)
        hits.append(fit_batch_laws(cells, n_boot=300, seed=seed)["m"].linear)
    assert np.mean(hits) >= 0.75  # nominal 95%


def test_sublinear_table_says_gamma_is_not_batch_invariant_and_changes_the_headline(sublinear):
    assert sublinear.headline == "per_model_batch_law"
    assert sum("not batch-invariant" in note for note in sublinear.notes) == 2


def test_predict_refuses_the_pooled_law_and_answers_per_model(sublinear):
    content = coefficients(sublinear)
    with pytest.raises(AnalysisError, match="pass --model NAME \\(one of: s, l\\)"):
        predict_lr(content, batch_size=128, tokens=32e9)
    for name, law in SUBLINEAR.items():
        pred = predict_lr(content, batch_size=128, tokens=32e9, model=name)
        truth = float(law.lr_opt(128, 32e9))
        assert pred.ci_low < truth < pred.ci_high and pred.lr_opt == pytest.approx(truth, rel=0.05)
        assert "alpha" in pred.law
    with pytest.raises(AnalysisError, match="--model 'xl' is not in the coefficients"):
        predict_lr(content, batch_size=128, tokens=32e9, model="xl")


def test_predict_by_model_size_interpolates_between_models_and_refuses_outside(sublinear):
    content = coefficients(sublinear)
    ends = [predict_lr(content, batch_size=128, tokens=32e9, model=m).lr_opt for m in ("s", "l")]
    middle = predict_lr(content, batch_size=128, tokens=32e9, n_params=np.sqrt(1e7 * 1e8))
    assert middle.lr_opt == pytest.approx(np.sqrt(ends[0] * ends[1]))
    assert predict_lr(content, batch_size=128, tokens=32e9, n_params=1e8).lr_opt == pytest.approx(ends[1])
    with pytest.raises(AnalysisError, match="outside the fitted models' sizes"):
        predict_lr(content, batch_size=128, tokens=32e9, n_params=1e9)
    far = predict_lr(content, batch_size=4096, tokens=32e9, model="s")
    assert any("outside the fitted batch sizes" in note for note in far.notes)


def test_models_with_different_gamma_laws_are_not_pooled():
    laws = {"s": PlantedLaw(a=4.6, b=-0.51), "l": PlantedLaw(a=0.5, b=-0.4)}
    result = analyze(_table(laws, {"s": 1e7, "l": 1e8}), n_boot=300)
    assert result.headline == "per_model_gamma"
    content = coefficients(result)
    with pytest.raises(AnalysisError, match="gamma laws differ"):
        predict_lr(content, batch_size=64, tokens=8e9)
    for name, law in laws.items():
        pred = predict_lr(content, batch_size=64, tokens=8e9, model=name)
        assert pred.ci_low < float(law.lr_opt(64, 8e9)) < pred.ci_high


def test_equal_size_models_stay_apart():
    # Two models of one parameter count (e.g. two MoE layouts): two labels, two laws, never averaged as seeds.
    laws = {"moe-a": PlantedLaw(a=4.6), "moe-b": PlantedLaw(a=2.0)}
    result = analyze(_table(laws, {"moe-a": 5e8, "moe-b": 5e8}), n_boot=200)
    runs_per_point = result.cells.groupby("model")["n_runs"].max()
    assert set(result.gamma.per_model) == {"moe-a", "moe-b"} and (runs_per_point == len(LRS)).all()
    assert result.headline == "per_model_gamma"
    for name, law in laws.items():  # gamma where the fit is pinned (a alone extrapolates to T = 1 token)
        assert result.gamma.per_model[name].predict(16e9) == pytest.approx(law.a * 16e9**law.b, rel=0.05)


def test_command_line_prints_the_law_that_holds_and_predicts_per_model(tmp_path, capsys):
    from powersweep.cli import main

    table = pd.concat(
        [
            synthetic_table(
                law,
                SweepGrid(models=((n, s),), tokens=TOKENS, batch_sizes=BATCHES, lrs=LRS),
                seed=i,
                sweep_id=n,
            )
            for i, ((n, law), s) in enumerate(zip(SUBLINEAR.items(), (1e7, 1e8)))
        ]
    )
    table.to_csv(tmp_path / "t.csv", index=False)
    assert (
        main(
            [
                "analyze",
                str(tmp_path / "t.csv"),
                "--out",
                str(tmp_path / "out"),
                "--no-figures",
                "--bootstrap",
                "200",
            ]
        )
        == 0
    )
    out = capsys.readouterr()
    assert (
        "headline:      lr_opt = c * B^alpha * T^beta per model" in out.out
        and "model s: alpha = 0.4" in out.out
    )
    assert "not batch-invariant for model s" in out.err
    coefficients_json = str(tmp_path / "out" / "coefficients.json")
    assert (
        main(["predict", "--coefficients", coefficients_json, "--batch-size", "128", "--tokens", "3.2e10"])
        == 2
    )
    assert "pass --model NAME" in capsys.readouterr().err
    assert (
        main(
            [
                "predict",
                "--coefficients",
                coefficients_json,
                "--batch-size",
                "128",
                "--tokens",
                "3.2e10",
                "--model",
                "l",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("lr_opt = ") and "law: model l: lr_opt = c * B^alpha * T^beta" in printed
