import numpy as np
import pandas as pd
import pytest

from powersweep.analysis.pipeline import analyze
from powersweep.analysis.report import write_report
from powersweep.analysis.synthetic import (
    PlantedLaw,
    SweepGrid,
    WidthGrid,
    synthetic_table,
    synthetic_width_table,
)
from powersweep.analysis.table import load_table
from powersweep.analysis.width_transfer import width_transfer

N_BOOT = 300


@pytest.fixture(scope="module")
def mixed():
    """Widths 64..1024 under muP (planted drift 0) and SP (planted drift -1), two T, one batch size."""
    table = load_table(synthetic_width_table(seed=0))
    return table, analyze(table, n_boot=N_BOOT)


def test_noise_free_loss_is_lowest_at_the_planted_optimum_of_each_width():
    grid = WidthGrid(tokens=(4e9,), lrs=tuple(np.geomspace(1e-4, 0.2, 401)))
    law = PlantedLaw(noise_sd=0.0)
    table = synthetic_width_table(law, grid, drifts={"sp": -1.0})
    best = table.loc[table.groupby("d_model")["loss_eval"].idxmin()].set_index("d_model")["lr"]
    planted = float(law.lr_opt(64, 4e9)) * (best.index.to_numpy(float) / grid.width_base) ** -1.0
    np.testing.assert_allclose(best.to_numpy(), planted, rtol=0.02)


def test_planted_flat_mup_and_drifting_sp_are_told_apart(mixed):
    _, result = mixed
    mup, sp = result.width_transfer.verdicts["mup"], result.width_transfer.verdicts["sp"]
    assert mup.ci.contains(0.0) and not mup.ci.contains(-1.0) and mup.kind == "flat"
    assert sp.ci.contains(-1.0) and not sp.ci.contains(0.0) and sp.kind == "drifts"
    assert mup.text.startswith("flat: lr_opt does not move with width (drift ")
    assert mup.text.endswith("covers 0)")
    assert sp.text.startswith("drifts: lr_opt ~ width^-") and sp.text.endswith("excludes 0)")
    assert not mup.warning and not sp.warning
    groups = result.width_transfer.groups
    assert len(groups) == 4 and set(groups["n_widths"]) == {5}  # (muP, SP) x two T, every width located


def test_mixed_table_fits_the_law_on_its_mup_rows_alone(mixed):
    table, result = mixed
    alone = analyze(load_table(table[table["parametrisation"].eq("mup")]), n_boot=N_BOOT)
    assert result.parametrisation == "mup"
    assert (result.gamma.pooled.a, result.gamma.pooled.b) == (alone.gamma.pooled.a, alone.gamma.pooled.b)
    assert result.gamma.pooled.b_ci == alone.gamma.pooled.b_ci
    columns = [c for c in result.cells.columns if c != "ln_lr_opt_draws"]
    pd.testing.assert_frame_equal(result.cells[columns], alone.cells[columns])
    n_sp = int(table["parametrisation"].eq("sp").sum())
    assert any(
        f"{n_sp} SP rows are left out of it and feed the transfer across widths" in n for n in result.notes
    )


def test_width_from_non_embedding_parameters_gives_the_same_drift_with_a_note(mixed):
    table, result = mixed
    older = table.assign(d_model=np.nan)  # rows written before d_model: null
    proxy = width_transfer(older, schedule="wsd", n_draws=N_BOOT, n_boot=N_BOOT)
    assert proxy.width_source == "n_params_non_embedding"
    assert any("sqrt(n_params_non_embedding)" in note for note in proxy.notes)
    for name, verdict in result.width_transfer.verdicts.items():
        assert proxy.verdicts[name].drift == pytest.approx(verdict.drift, abs=1e-9)


def test_drifting_mup_is_a_warning_on_the_page(tmp_path):
    table = load_table(synthetic_width_table(drifts={"mup": -0.5}, seed=1))
    paths = write_report(table, tmp_path, n_boot=N_BOOT, figures=False)
    page = paths.index_html.read_text()
    answer = page[page.index("<section id='answer'>") : page.index("</section>")]
    assert "<b>Warning:</b> under muP, lr_opt moves with width (drifts: lr_opt ~ width^-0." in answer


def test_report_shows_the_section_and_the_figure(mixed, tmp_path):
    _, result = mixed
    paths = write_report(result.table, tmp_path, result=result)
    page = paths.index_html.read_text()
    assert "<h2>Transfer across widths</h2>" in page and 'id="width-transfer"' in page
    assert "d_model 1024" in page and "<b>SP</b>: drifts: lr_opt ~ width^-" in page
    files = paths.figures["fig9_width_transfer"]
    assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "src='fig9_width_transfer.png'" in page


def test_the_figure_is_drawn_at_the_largest_t_where_every_width_has_its_optimum():
    table = synthetic_width_table(seed=2)
    # SP's widest model at the largest T loses its lrs above its optimum: its lr_opt is not located there
    late = table["parametrisation"].eq("sp") & table["d_model"].eq(1024) & table["tokens"].eq(4e9)
    table = table[~(late & (table["lr"] > 0.0011))]
    widths = width_transfer(load_table(table), schedule="wsd", n_draws=200, n_boot=200)
    assert widths.figure_group("sp") == (1e9, 64)
    assert widths.figure_group("mup") == (4e9, 64)


def test_a_table_without_width_information_has_no_section_and_no_error(tmp_path):
    grid = SweepGrid(models=(("12M", 12e6), ("36M", 36e6), ("121M", 121e6)), tokens=(2e9, 8e9))
    table = load_table(synthetic_table(grid=grid))
    paths = write_report(table, tmp_path, n_boot=100)
    assert analyze(table, n_boot=100).width_transfer is None
    page = paths.index_html.read_text()
    assert "Transfer across widths" not in page
    assert "fig9_width_transfer" not in paths.figures and "fig9_width_transfer" not in paths.skipped


def test_fewer_than_three_widths_leave_the_check_out_and_say_why():
    table = load_table(synthetic_width_table(grid=WidthGrid(widths=(128, 256)), seed=3))
    result = analyze(table, n_boot=100)
    assert result.width_transfer is None
    assert any(n.startswith("transfer across widths not checked: no (T, batch size)") for n in result.notes)
