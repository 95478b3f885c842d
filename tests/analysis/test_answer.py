"""The report answers first: the law, its interval, the cells, the recommendations and the scheduler line come
before any figure or table of details; fits the sweep cannot identify are named as missing, not shown."""

from html.parser import HTMLParser

import numpy as np
import pytest

from powersweep.analysis.answer import SCALE_UP, answer
from powersweep.analysis.export import predict_lr, read_coefficients
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.report import write_report
from powersweep.analysis.synthetic import PAPER_MODELS, PlantedLaw, SweepGrid, synthetic_table
from powersweep.analysis.table import load_table

LRS = tuple(np.geomspace(1e-4, 0.1, 15).tolist())
ONE_BATCH = SweepGrid(models=(("36M", 36e6),), tokens=(2e9, 4e9, 8e9, 16e9, 32e9), batch_sizes=(64,), lrs=LRS)
THREE_MODELS = SweepGrid(
    models=PAPER_MODELS, tokens=(2e9, 8e9, 32e9), batch_sizes=(32, 64, 128, 256), lrs=LRS
)


class Outline(HTMLParser):
    """The page as a list of (tag, id or class, inside the answer block); text of the answer block."""

    def __init__(self):
        super().__init__()
        self.tags, self.answer_text, self.depth = [], [], 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if self.depth or attrs.get("id") == "answer":
            self.depth += tag == "section"
        self.tags.append((tag, attrs.get("id") or attrs.get("class"), self.depth > 0))

    def handle_endtag(self, tag):
        if self.depth and tag == "section":
            self.depth -= 1

    def handle_data(self, data):
        if self.depth:
            self.answer_text.append(data)


def _outline(page: str) -> Outline:
    outline = Outline()
    outline.feed(page)
    return outline


@pytest.fixture(scope="module")
def one_batch_report(tmp_path_factory):
    table = load_table(synthetic_table(PlantedLaw(), ONE_BATCH, seed=3))
    out = tmp_path_factory.mktemp("one_batch")
    return write_report(table, out, n_boot=200), table


@pytest.fixture(scope="module")
def three_model_report(tmp_path_factory):
    table = load_table(synthetic_table(PlantedLaw(), THREE_MODELS, seed=5))
    out = tmp_path_factory.mktemp("three_models")
    return write_report(table, out, n_boot=200), table


@pytest.mark.parametrize("report", ["one_batch_report", "three_model_report"])
def test_first_section_after_the_title_is_the_answer_and_precedes_every_figure_and_table(report, request):
    paths, _ = request.getfixturevalue(report)
    outline = _outline(paths.index_html.read_text())
    body = [t for t in outline.tags if t[0] not in ("html", "head", "meta", "title", "style", "body")]
    assert body[0][0] == "h1" and body[1] == ("section", "answer", True)
    first_outside = next(i for i, t in enumerate(body) if i > 1 and not t[2])
    inside = body[1:first_outside]
    assert all(t[0] != "img" for t in inside) and [t[1] for t in inside if t[0] == "table"] == [
        "recommendations"
    ]
    before_answer_ends = {t[1] for t in inside}
    assert {"law", "formulas", "cells", "scheduler", "snippet"} <= before_answer_ends
    later = body[first_outside:]
    assert any(t[0] == "img" for t in later) and any(t[0] == "table" for t in later)
    first_img = next(i for i, t in enumerate(later) if t[0] == "img")
    first_table = next(i for i, t in enumerate(later) if t[0] == "table")
    assert first_img < first_table  # figures, then the tables


def test_answer_block_states_the_law_its_interval_the_cells_and_the_planted_lr(three_model_report):
    paths, table = three_model_report
    text = " ".join(_outline(paths.index_html.read_text()).answer_text)
    result = analyze(table, n_boot=200)
    fit = result.gamma.pooled
    assert f"b = {fit.b:.4f} (95% CI {fit.b_ci.low:.4f} to {fit.b_ci.high:.4f})" in text
    assert f"Backed by {fit.n_points} of {len(result.cells)} cells" in text
    assert '"lr_decay_style": "power"' in text and "lr(n) = min(" in text
    planted = PlantedLaw()
    ans = answer(result, read_coefficients(paths.coefficients))
    assert len(ans.recommendations) == 3 * len(SCALE_UP)  # smallest, middle and largest batch, at 3 budgets
    for rec in ans.recommendations:
        assert rec.lr_opt == pytest.approx(float(planted.lr_opt(rec.batch_size, rec.tokens)), rel=0.35)
        assert f"{rec.lr_opt:.3g}" in text


def test_recommendations_are_what_predict_gives(three_model_report):
    paths, table = three_model_report
    content = read_coefficients(paths.coefficients)
    ans = answer(analyze(table, n_boot=200), content)
    assert max(r.tokens for r in ans.recommendations) == pytest.approx(32e9 * max(SCALE_UP))
    for rec in ans.recommendations:
        pred = predict_lr(content, batch_size=rec.batch_size, tokens=rec.tokens, model=rec.model)
        assert (rec.lr_opt, rec.ci_low, rec.ci_high) == (pred.lr_opt, pred.ci_low, pred.ci_high)
        assert rec.ci_low < rec.lr_opt < rec.ci_high


def test_one_batch_size_names_the_batch_fits_as_missing_and_shows_none_of_them(one_batch_report):
    paths, _ = one_batch_report
    page = paths.index_html.read_text()
    text = " ".join(_outline(page).answer_text)
    assert "batch-size scaling" in text and "the sweep has 1 batch size" in text
    assert "sweep at least 3 batch sizes" in text and "sweep at least 3 model sizes" in text
    for shown_as_result in (
        "ln_B =",
        "Batch-size scaling: lr_opt",
        "Critical batch size</h2>",
        "Transfer across model size",
        "fig3_lr_opt_vs_batch.png",
        "fig7_critical_batch.png",
    ):
        assert shown_as_result not in page
    assert {"fig3_lr_opt_vs_batch", "fig7_critical_batch"} <= set(paths.skipped)


def test_three_models_and_four_batch_sizes_miss_nothing_and_show_the_batch_fits(three_model_report):
    paths, _ = three_model_report
    page = paths.index_html.read_text()
    assert "Not identified by this sweep" not in page
    for shown in (
        "ln_B =",
        "Batch-size scaling: lr_opt",
        "Critical batch size</h2>",
        "Transfer across model size",
    ):
        assert shown in page


def test_a_table_without_a_law_says_why_in_the_answer_block(tmp_path):
    one_t = synthetic_table(
        PlantedLaw(), SweepGrid(models=(("m", 1e7),), tokens=(2e9,), batch_sizes=(64, 128), lrs=LRS)
    )
    paths = write_report(load_table(one_t), tmp_path, n_boot=50, figures=False)
    text = " ".join(_outline(paths.index_html.read_text()).answer_text)
    assert "No law could be fitted" in text and "sweep at least 3 token budgets" in text


def test_refresh_only_when_asked(tmp_path):
    table = load_table(synthetic_table(PlantedLaw(), ONE_BATCH, seed=3))
    plain = write_report(table, tmp_path / "plain", n_boot=50, figures=False).index_html.read_text()
    watched = write_report(
        table, tmp_path / "watch", n_boot=50, figures=False, refresh_s=5
    ).index_html.read_text()
    assert "http-equiv" not in plain and "<meta http-equiv='refresh' content='5'>" in watched


def test_one_batch_size_has_no_joint_batch_law_and_predict_joint_gives_the_lr_alone(one_batch_report, capsys):
    import argparse

    from powersweep.cli.analysis_commands import add_predict_parser

    paths, table = one_batch_report
    band = analyze(table, n_boot=50).band
    assert not band.batch_law.ok and "sweep at least 3 batch sizes" in band.batch_law.reason
    assert band.lr_law.ok
    parser = argparse.ArgumentParser()
    add_predict_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        ["predict", "--coefficients", str(paths.coefficients), "--law", "joint", "--tokens", "64e9"]
    )
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.startswith("lr_opt = ") and "batch_opt" not in out.splitlines()[0]
    assert "note: no batch_opt: the sweep has 1 batch size(s)" in out
