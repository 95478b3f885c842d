"""Models appear in order of size in every output: by n_params, else by the natural order of their names."""

import json

import numpy as np
import pandas as pd
import pytest

from powersweep.analysis import plots
from powersweep.analysis.optimum import lr_points
from powersweep.analysis.order import model_order, natural_key
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.report import write_report
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table

WIDTHS = ("1024", "1280", "512", "768")  # a string sort draws them in this order


def _widths_table(sizes: dict[str, float] | None = None) -> pd.DataFrame:
    """Four models named by width on a small grid; without n_params unless ``sizes`` gives them."""
    models = tuple((name, (sizes or {}).get(name, 1e7)) for name in WIDTHS)
    grid = SweepGrid(
        models=models,
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64, 128),
        lrs=tuple(np.geomspace(1e-4, 0.1, 21).tolist()),
    )
    table = synthetic_table(PlantedLaw(), grid, seed=2)
    return table if sizes else table.drop(columns="n_params")


def _first_seen(names) -> list[str]:
    return list(dict.fromkeys(str(n) for n in names))


def test_names_sort_naturally():
    assert sorted(["w1024", "w512", "w768"], key=natural_key) == ["w512", "w768", "w1024"]
    assert sorted(["d1024-l4", "d256-l4", "D256-l2"], key=natural_key) == ["D256-l2", "d256-l4", "d1024-l4"]
    assert sorted(["12M", "121M", "1.5B", "36M"], key=natural_key) == ["1.5B", "12M", "36M", "121M"]


@pytest.fixture(scope="module")
def widths_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("widths")
    table = load_table(_widths_table())
    result = analyze(table, n_boot=50)
    write_report(table, out, result=result, figures=False)
    return result, out


def test_models_named_by_width_come_out_smallest_first_everywhere(widths_report):
    result, out = widths_report
    want = ["512", "768", "1024", "1280"]
    assert model_order(result.table) == want
    assert _first_seen(result.cells["model"]) == want
    assert _first_seen(pd.read_csv(out / "cells.csv")["model"]) == want
    coefficients = json.loads((out / "coefficients.json").read_text())
    assert coefficients["provenance"]["models"] == want
    assert list(coefficients["per_model"]) == want and list(result.batch) == want
    assert _first_seen(result.transfer.table["model"]) == [*want, "pooled"]
    assert _first_seen(result.critical.per_tokens["model"]) == [
        m for m in want if m in set(result.critical.per_tokens["model"])
    ]
    page = (out / "index.html").read_text()
    rows = [page.index(f"<td>model {m}</td>") for m in want]  # the per-model rows of the gamma table
    assert rows == sorted(rows)


def test_figures_draw_models_smallest_first(widths_report):
    result, _ = widths_report
    fig = plots.fig_loss_vs_lr(lr_points(result.table), result.cells)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert _first_seen(t.split(",")[0] for t in titles) == ["512", "768", "1024", "1280"]
    fig = plots.fig_gamma_vs_tokens(result.gamma, paper=False)
    assert _first_seen(ax.get_title().split(":")[0] for ax in fig.axes if ax.get_title())[:4] == [
        "512",
        "768",
        "1024",
        "1280",
    ]


def test_n_params_decides_the_order_when_names_disagree():
    sizes = {"1024": 4e7, "1280": 1e7, "512": 3e7, "768": 2e7}
    result = analyze(load_table(_widths_table(sizes)), n_boot=0)
    want = ["1280", "768", "512", "1024"]
    assert model_order(result.table) == want
    assert _first_seen(result.cells["model"]) == want and list(result.gamma.per_model) == want


def test_models_of_unknown_size_follow_the_sized_ones_by_name():
    frame = pd.DataFrame({"model": ["w1024", "w512", "big", "small"], "n_params": [np.nan, np.nan, 2e9, 1e8]})
    assert model_order(frame) == ["small", "big", "w512", "w1024"]
