import numpy as np
import pandas as pd
import pytest

from powersweep.analysis import plots
from powersweep.analysis.export import coefficients
from powersweep.analysis.optimum import lr_points
from powersweep.analysis.pipeline import analyze
from powersweep.analysis.report import CAPTIONS, write_report
from powersweep.analysis.synthetic import PlantedLaw, SweepGrid, synthetic_power_table, synthetic_table
from powersweep.analysis.table import load_table

SMALL = SweepGrid(
    models=(("12M", 12e6), ("36M", 36e6)),
    tokens=(2e9, 8e9, 32e9),
    batch_sizes=(32, 64, 128, 256),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory):
    table = load_table(
        pd.concat(
            [
                synthetic_table(PlantedLaw(), SMALL, seed=1),
                synthetic_power_table(tokens=(8e9, 32e9), batch_sizes=(64,), seed=2),
            ]
        )
    )
    out = tmp_path_factory.mktemp("report")
    return write_report(table, out, n_boot=200), out


def test_every_figure_is_written_as_png_and_svg_and_shown_on_the_page(full_report):
    paths, out = full_report
    # curves: test_spikes.py
    # widths: test_width_transfer.py
    assert (
        set(paths.figures) == set(CAPTIONS) - {"fig0_curves", "fig9_width_transfer"} and paths.skipped == {}
    )
    page = paths.index_html.read_text()
    for stem, files in paths.figures.items():
        assert files.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in files.svg.read_text()[:2000]
        assert f"src='{stem}.png'" in page and f"href='{stem}.svg'" in page
        # SVG where the browser shows it, in one column on a narrow screen
        assert f"srcset='{stem}-narrow.svg'" in page and f"srcset='{stem}.svg'" in page
        assert "<svg" in files.narrow_svg.read_text()[:2000]
    assert paths.coefficients == out / "coefficients.json" and paths.coefficients.exists()
    assert pd.read_csv(paths.cells_csv).shape[0] == 2 * 3 * 4


def test_page_shows_the_fitted_numbers(full_report):
    paths, _ = full_report
    page = paths.index_html.read_text()
    for text in (
        "gamma = lr_opt / batch_size = a * T^b",
        "paper recipe",
        "Transfer across model size",
        "Power scheduler (a, b) search",
        "Band fit",
        "Critical batch size",
        "lr(n) = min(lr_max",
    ):
        assert text in page


def test_missing_power_runs_skip_fig_5_and_6_and_say_so(tmp_path):
    grid = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64, 128),
        lrs=tuple(np.geomspace(1e-4, 0.1, 13).tolist()),
    )
    paths = write_report(load_table(synthetic_table(grid=grid)), tmp_path, n_boot=100)
    assert set(paths.skipped) == {"fig5_power_loss", "fig6_power_best"}
    assert not (tmp_path / "fig5_power_loss.png").exists()
    page = paths.index_html.read_text()
    assert "Skipped Fig. 5: Power search" in page and "no runs with schedule &#x27;power&#x27;" in page


def test_power_only_table_skips_the_point_figures(tmp_path):
    table = load_table(synthetic_power_table(tokens=(16e9,), batch_sizes=(64,)))
    paths = write_report(table, tmp_path, n_boot=50)
    assert set(paths.figures) == {"fig5_power_loss", "fig6_power_best"}
    assert paths.coefficients is None and not (tmp_path / "coefficients.json").exists()
    assert "no runs with a fixed peak lr" in paths.index_html.read_text()


def test_schedules_figure_takes_arrays_or_callables(tmp_path):
    tokens = np.geomspace(1e6, 1e10, 50)
    fig = plots.fig_schedules(
        {"constant": (tokens, np.full(50, 0.01)), "power": lambda n: np.minimum(0.02, 64 * 4.0 * n**-0.51)}
    )
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines] == ["constant", "power"]
    assert ax.get_xscale() == "log" and "(tokens)" in ax.get_xlabel() and fig.get_suptitle()
    files = plots.save_figure(fig, tmp_path, "schedules")
    assert files.png.exists() and files.svg.exists()


def test_gamma_figure_has_log_axes_units_and_a_panel_per_model():
    result = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=100)
    fig = plots.fig_gamma_vs_tokens(result.gamma)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert [t.split(":")[0] for t in titles] == ["12M", "36M", "pooled"]
    assert (
        titles[0] == f"12M: {result.gamma.per_model['12M'].a:.3g} * T^{result.gamma.per_model['12M'].b:.3f}"
    )
    for ax in fig.axes:
        assert ax.get_xscale() == ax.get_yscale() == "log"
        assert ax.get_xlabel() == "training tokens T (tokens)" and "gamma" in ax.get_ylabel()


FIVE = SweepGrid(
    models=tuple((f"m{i}", 1e7 * 2**i) for i in range(5)),
    tokens=(2e9, 8e9),
    batch_sizes=(32, 64),
    lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
)


def _figure_stats(fig):
    fig.canvas.draw()  # tick labels exist only after a draw
    visible = [ax for ax in fig.axes if ax.get_visible()]
    return visible, fig.get_size_inches() * 120


def test_panels_wrap_and_figures_fit_the_page():
    result = analyze(load_table(synthetic_table(PlantedLaw(), FIVE, seed=2)), n_boot=50)
    for fig in (plots.fig_gamma_vs_tokens(result.gamma), plots.fig_lr_opt_vs_batch(result.gamma)):
        visible, pixels = _figure_stats(fig)
        columns = {round(ax.get_position().x0, 3) for ax in visible}
        assert len(columns) <= plots.MAX_COLUMNS <= 4 and len(visible) >= 5
        assert pixels[0] <= 1600  # shown at 1200 px wide: scaled by 0.75 at most


def test_log_axes_label_no_minor_ticks_and_legends_sit_off_the_data():
    result = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=50)
    points = lr_points(result.table, schedule=result.schedule)
    fig = plots.fig_loss_vs_lr(points, result.cells)
    visible, _ = _figure_stats(fig)
    for ax in visible:
        assert all(not t.get_text() for t in ax.xaxis.get_minorticklabels())
        labels = [t.get_text() for t in ax.xaxis.get_majorticklabels() if t.get_text()]
        assert 2 <= len(labels) <= 6
        legend = ax.get_legend()
        if legend is not None:  # drawn to the right of the panel, not over its data
            assert legend.get_window_extent().x0 >= ax.get_window_extent().x1


def test_the_papers_line_and_mup_labels_only_where_the_table_says_mup_and_wsd():
    mup = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=50)
    unknown = analyze(
        load_table(
            synthetic_table(PlantedLaw(), SMALL, seed=3).drop(columns=["parametrisation", "schedule"])
        ),
        n_boot=50,
    )
    assert mup.paper_applies and not unknown.paper_applies and unknown.parametrisation == "unknown"
    assert sum("does not say its schedule or parametrisation" in n for n in unknown.notes) == 1
    assert not any("does not say" in n for n in mup.notes)

    def paper_lines(result):
        fig = plots.fig_gamma_vs_tokens(result.gamma, paper=result.paper_applies)
        return sum(line.get_label().startswith("paper") for ax in fig.axes for line in ax.get_lines())

    assert paper_lines(mup) > 0 and paper_lines(unknown) == 0
    assert "muP" in plots.lr_label("mup") and "muP" not in plots.lr_label("unknown")
    assert coefficients(unknown)["units"]["lr"].endswith("(parametrisation not stated)")
    assert coefficients(unknown)["provenance"]["schedule"] == "unknown"


def test_one_model_gamma_figure_has_one_panel_wide_enough_for_its_title():
    grid = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(64,),
        lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
    )
    result = analyze(load_table(synthetic_table(PlantedLaw(), grid, seed=3)), n_boot=50)
    fig = plots.fig_gamma_vs_tokens(result.gamma)
    visible, _ = _figure_stats(fig)
    assert [ax.get_title().split(":")[0] for ax in visible] == ["36M"]
    renderer = fig.canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    assert title.x0 >= 0 and title.x1 <= fig.bbox.width  # not clipped at the figure's edges
    assert not title.overlaps(fig.legends[0].get_window_extent(renderer))


def test_tick_labels_use_one_format_per_magnitude():
    # token axes read 300K, 1M, 3M (not 300000 beside 1M); batch sizes and lrs stay plain numbers
    assert [plots._tick(v) for v in (3e5, 1e6, 3e6, 2e9)] == ["300K", "1M", "3M", "2B"]
    assert [plots._tick(v) for v in (2048, 5e-4)] == ["2048", "0.0005"]


def test_an_axis_below_1e_4_writes_every_tick_as_a_power_of_ten():
    # '%g' gives 5e-05 beside 0.0001 on one axis; gamma per sequence sits there for every real sweep
    assert [plots._tick(v, scientific=True) for v in (5e-5, 1e-4, 2.5e-4, 3e-3, 30.0)] == [
        "5e-5",
        "1e-4",
        "2.5e-4",
        "3e-3",
        "30",
    ]
    result = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=50)
    visible, _ = _figure_stats(plots.fig_gamma_vs_tokens(result.gamma))
    labels = [t.get_text() for ax in visible for t in ax.yaxis.get_majorticklabels() if t.get_text()]
    assert labels and all("e-" in label and "e-0" not in label for label in labels)


def test_loss_figure_marks_each_optimum_on_its_curve_and_drops_a_repeated_panel():
    one_batch = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(64,),
        lrs=tuple(np.geomspace(1e-4, 0.1, 15).tolist()),
    )
    for grid, panels in ((SMALL, 2 * 2), (one_batch, 1)):
        result = analyze(load_table(synthetic_table(PlantedLaw(), grid, seed=3)), n_boot=50)
        fig = plots.fig_loss_vs_lr(lr_points(result.table, schedule=result.schedule), result.cells)
        visible, _ = _figure_stats(fig)
        assert len(visible) == panels  # one batch size: the per-batch panel would repeat one curve
        stars = [line for ax in visible for line in ax.get_lines() if line.get_marker() == "*"]
        lines = [line for ax in visible for line in ax.get_lines() if line.get_marker() == "o"]
        assert len(stars) == len(lines)  # one per curve, at its fitted minimum
        for star in stars:
            cell = result.cells[np.isclose(result.cells["lr_opt"], star.get_xdata()[0])]
            assert len(cell) == 1 and star.get_ydata()[0] == pytest.approx(cell["loss_opt"].iloc[0])
        assert [t.get_text() for t in visible[0].get_legend().get_texts()] == ["2B", "8B", "32B"]


def test_keys_name_only_what_is_drawn():
    result = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=50)
    fig4 = plots.fig_gamma_vs_tokens(result.gamma)
    assert not result.gamma.cells.eval("top_k & ~used").any()
    assert "flagged (not fitted)" not in [t.get_text() for t in fig4.legends[0].get_texts()]
    fig8 = plots.fig_sensitivity(result.sensitivity)  # two panels, one key beside both
    assert len(fig8.legends) == 1 and all(ax.get_legend() is None for ax in fig8.axes)
    # the colours of T have a key, fitted or not
    fig7 = plots.fig_critical_batch(result.cells, result.critical)
    keys = [t.get_text() for t in fig7.axes[0].get_legend().get_texts()]
    assert [k for k in keys if k.startswith("T = ")] == ["T = 2B", "T = 8B", "T = 32B"]


def test_the_papers_line_only_for_its_unit_of_batch_size():
    # gamma is lr per sequence: the paper's sequences hold 4096 tokens, the main job's 64
    table = synthetic_table(PlantedLaw(), SMALL, seed=3)
    assert analyze(load_table(table), n_boot=50).paper_applies
    assert not analyze(load_table(table.assign(seq_len=64)), n_boot=50).paper_applies


def test_batch_axes_tick_at_the_swept_batch_sizes():
    result = analyze(load_table(synthetic_table(PlantedLaw(), SMALL, seed=3)), n_boot=50)
    for fig in (
        plots.fig_lr_opt_vs_batch(result.gamma),
        plots.fig_critical_batch(result.cells, result.critical),
    ):
        visible, _ = _figure_stats(fig)
        labels = [t.get_text() for t in visible[0].xaxis.get_majorticklabels() if t.get_text()]
        assert labels == ["32", "64", "128", "256"]  # SMALL's batch sizes, not 50, 100, 200


def test_commands_in_the_text_are_code_not_backticks(tmp_path):
    grid = SweepGrid(
        models=(("36M", 36e6),),
        tokens=(2e9, 8e9, 32e9),
        batch_sizes=(32, 64, 128),
        lrs=tuple(np.geomspace(1e-4, 0.1, 13).tolist()),
    )
    table = load_table(synthetic_table(grid=grid).drop(columns="seq_len"))  # the note names a command
    page = write_report(table, tmp_path, n_boot=50, figures=False).index_html.read_text()
    assert "<code>powersweep predict ... --seq-len L</code>" in page and "`" not in page
