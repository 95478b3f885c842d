"""Figures of the analysis, after the paper's Fig. 1-6, drawn on matplotlib's Agg canvas.

Each ``fig_*`` function returns a ``matplotlib.figure.Figure`` (no pyplot state, so nothing leaks
between calls); ``save_figure`` writes it as PNG and SVG. Axes carry units; lr, tokens and batch
size are on log scales as in the paper.

>>> save_figure(fig_gamma_vs_tokens(result.gamma), "out", "fig4_gamma_vs_tokens")
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from powersweep.analysis.batch_scaling import BatchLaw
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.fit import GammaFits, PowerLawFit
from powersweep.analysis.order import in_model_order, model_order
from powersweep.analysis.power_search import PowerSearch
from powersweep.analysis.regimes import CriticalBatch, Sensitivity, surge_curve
from powersweep.analysis.width_transfer import PARAMETRISATION_NAMES, WidthTransfer

Curve = tuple[np.ndarray, np.ndarray] | Callable[[np.ndarray], np.ndarray]
PAPER_A, PAPER_B = 4.6, -0.51  # the paper's Eq. 5, drawn for reference
LR_AXIS = "peak learning rate"
MAX_COLUMNS = 3  # panels per row: wider figures are unreadable at the page's width (1200 px)
# A phone's layout: every panel in one column, 4.2 inches wide (403 px at 96 dpi), so that a 390 px screen
# shows the figure at about 0.9 of its size and its 10 pt labels at 12 px; titles wrapped to that width.
NARROW_WIDTH_IN, NARROW_PANEL_HEIGHT_IN, NARROW_TITLE_CHARS = 4.2, 3.3, 44
_narrow: ContextVar[bool] = ContextVar("narrow", default=False)


@contextmanager
def narrow_layout() -> Iterator[None]:
    """Inside it, ``fig_*`` draw their panels stacked in one column, legends below: for a phone's width.

    >>> with narrow_layout():
    ...     save_figure(fig_gamma_vs_tokens(result.gamma), "out", "fig4_gamma_vs_tokens-narrow")
    """
    token = _narrow.set(True)
    try:
        yield
    finally:
        _narrow.reset(token)


def _wrap(title: str) -> str:
    """In the narrow layout, each line of `title` wrapped to the narrow width (its own line breaks kept)."""
    if not (_narrow.get() and title):
        return title
    return "\n".join(textwrap.fill(line, NARROW_TITLE_CHARS) for line in title.splitlines())


def lr_label(parametrisation: str) -> str:
    """The lr axis label: 'muP base' only when the table says the runs are muP."""
    return (
        f"{LR_AXIS} (muP base)"
        if parametrisation == "mup"
        else (f"{LR_AXIS} (SP)" if parametrisation == "sp" else LR_AXIS)
    )


@dataclass(frozen=True)
class FigureFiles:
    """Where one figure was written."""

    png: Path
    svg: Path
    narrow_svg: Path | None = None  # the same figure in the narrow layout (a phone's width)


def save_figure(fig: Figure, out_dir: str | Path, stem: str) -> FigureFiles:
    """Write ``fig`` as ``stem.png`` (120 dpi) and ``stem.svg`` under ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = FigureFiles(out / f"{stem}.png", out / f"{stem}.svg")
    fig.savefig(files.png, dpi=120)
    fig.savefig(files.svg)
    return files


def save_figures(build: Callable[[], Figure], out_dir: str | Path, stem: str) -> FigureFiles:
    """``save_figure(build(), ...)``, and the figure drawn again in the narrow layout: ``stem-narrow.svg``."""
    files = save_figure(build(), out_dir, stem)
    with narrow_layout():
        narrow = build()
    narrow.savefig(files.svg.with_name(f"{stem}-narrow.svg"))
    return FigureFiles(files.png, files.svg, files.svg.with_name(f"{stem}-narrow.svg"))


def _figure(nrows: int, ncols: int, title: str, *, size: tuple[float, float] = (5.0, 3.8)):
    """A figure and its (nrows, ncols) axes; in the narrow layout the same axes stacked in one column."""
    narrow = _narrow.get()
    figsize = (
        (NARROW_WIDTH_IN, NARROW_PANEL_HEIGHT_IN * nrows * ncols + 0.4)
        if narrow
        else (size[0] * ncols, size[1] * nrows)
    )
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)  # the Agg canvas: no display, no global pyplot state
    fig.suptitle(_wrap(title))
    if narrow:
        return fig, fig.subplots(nrows * ncols, 1, squeeze=False).reshape(nrows, ncols)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def _panels(n: int, title: str, *, size: tuple[float, float] = (4.2, 3.4)):
    """A figure of ``n`` panels wrapped at MAX_COLUMNS per row; returns it and the n axes in use."""
    ncols = 1 if _narrow.get() else max(1, min(n, MAX_COLUMNS))
    nrows = max(1, -(-n // ncols))
    if ncols == 1:  # room for the title and the legend beside one panel
        size = (size[0] * 1.7, size[1])
    fig, axes = _figure(nrows, ncols, title, size=size)
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[: max(n, 1)]


def _colours(values) -> dict:
    values = sorted(set(values))
    cmap = colormaps["viridis"]
    return {v: cmap(i / max(len(values) - 1, 1)) for i, v in enumerate(values)}


def _log_axes(ax, xlabel: str, ylabel: str, title: str = "", *, logy: bool = True) -> None:
    ax.set(xlabel=xlabel, ylabel=ylabel, title=_wrap(title))
    box = ax.dataLim
    if not (np.isfinite(box.get_points()).all() and box.x1 > 0 and (box.y1 > 0 or not logy)):
        # empty artists still count as data to matplotlib; a log axis without positive data cannot be drawn
        ax.text(0.5, 0.5, "no data to show", ha="center", va="center", transform=ax.transAxes)
        return
    ax.set_xscale("log")
    _log_ticks(ax.xaxis, box.x0, box.x1)
    if logy:
        ax.set_yscale("log")
        _log_ticks(ax.yaxis, box.y0, box.y1)
    ax.grid(True, which="major", alpha=0.3)


def _log_ticks(axis, low: float, high: float) -> None:
    """Labelled ticks at 1, 2, 5 x 10^k over short spans, powers of ten over long ones; minor ticks unlabelled
    (matplotlib labels minor ticks on short log axes, and those labels overlap)."""
    decades = np.log10(high / low) if low > 0 and high > low else 0.0
    if decades < 0.5:  # under half a decade: evenly spaced round numbers, as on a linear axis
        axis.set_major_locator(MaxNLocator(nbins=4))
    else:
        subs = (1.0,) if decades > 2.5 else (1.0, 3.0) if decades > 1.2 else (1.0, 2.0, 5.0)
        axis.set_major_locator(LogLocator(base=10, subs=subs, numticks=8))
    small = 0 < low < 1e-4  # below 1e-4 '%g' writes 5e-05 beside 0.0001: such an axis is in powers of ten
    axis.set_major_formatter(FuncFormatter(lambda v, _: _tick(v, scientific=small)))
    axis.set_minor_formatter(NullFormatter())


def _swept_ticks(axis, values) -> None:
    """Ticks at the swept values themselves (batch sizes 32, 64, 128, not 50, 100, 200) when there are few."""
    swept = sorted(set(np.asarray(values, dtype=float).tolist()))
    if 2 <= len(swept) <= 8:  # more would crowd the axis
        axis.set_major_locator(FixedLocator(swept))


def _tick(value: float, *, scientific: bool = False) -> str:
    if scientific and 0 < value < 1:
        mantissa, exponent = f"{value:e}".split("e")
        return f"{float(mantissa):g}e{int(exponent)}"  # 5e-5, 1e-4, 2.5e-3
    if value >= 1e9:
        return f"{value / 1e9:g}B"
    if value >= 1e6:
        return f"{value / 1e6:g}M"
    if value >= 1e4:  # 300K beside 1M, not 300000 (batch sizes up to 5000 stay plain)
        return f"{value / 1e3:g}K"
    return f"{value:g}"


def _figure_legend(fig: Figure, axes, **options) -> None:
    """One legend for panels that share their keys, outside the panels on the right."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries and _narrow.get():  # below the stacked panels: beside them it would take their width
        ncols = _legend_columns(entries)
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncols=ncols, **options)
    elif entries:
        # centred: at the top it would sit over the end of the figure title
        fig.legend(list(entries.values()), list(entries), loc="outside right center", **options)


def _legend_columns(labels) -> int:
    """As many columns (up to 3) as the narrow figure's width holds for labels this long."""
    longest = max((len(str(label)) for label in labels), default=1)
    return max(1, min(3, NARROW_TITLE_CHARS // (longest + 6)))


def _legend(ax, **options) -> None:
    """The legend to the right of the panel, off the data."""
    if not ax.get_legend_handles_labels()[0]:  # matplotlib warns about an empty legend
        return
    if _narrow.get():  # under the panel's x label, in columns: beside it would take half the width
        ncols = _legend_columns(ax.get_legend_handles_labels()[1])
        options |= {"fontsize": "small"}  # the figure is shown near its own size: x-small would be 7 px
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.24), ncols=ncols, borderaxespad=0.0, **options)
    else:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, **options)


def fig_schedules(
    curves: Mapping[str, Curve], *, tokens: np.ndarray | None = None, lr_axis: str = LR_AXIS
) -> Figure:
    """Fig. 1: lr against tokens seen for each named schedule.

    A curve is a pair (tokens array, lr array) or a callable lr(tokens), evaluated on ``tokens``
    (default: 400 points from 1e6 to 1e12; the report passes the swept token range).
    """
    if not curves:
        raise AnalysisError("curves is empty: pass {name: (tokens, lr)} or {name: callable}")
    grid = np.geomspace(1e6, 1e12, 400) if tokens is None else np.asarray(tokens, dtype=float)
    fig, axes = _figure(1, 1, "Fig. 1: learning-rate schedules", size=(7.5, 4.2))
    ax = axes[0, 0]
    for name, curve in curves.items():
        x, y = (grid, np.asarray(curve(grid), dtype=float)) if callable(curve) else map(np.asarray, curve)
        ax.plot(x, y, label=name)
    _log_axes(ax, "tokens seen n (tokens)", f"lr(n), {lr_axis}")
    _legend(ax, fontsize="small")
    return fig


def fig_loss_vs_lr(points: pd.DataFrame, cells: pd.DataFrame, *, lr_axis: str = LR_AXIS) -> Figure:
    """Fig. 2: loss against lr, per T at one batch size (left) and per batch size at one T (right).

    One row per model; diverged lrs are drawn as crosses on the top edge, lr_opt as a star at the fitted
    minimum. The right panel is left out when no model has more than one batch size (it would repeat a curve
    of the left one).
    """
    models = model_order(points)
    by_batch = bool(len(points)) and points.groupby("model")["batch_size"].nunique().max() > 1
    fig, axes = _figure(
        len(models),
        2 if by_batch else 1,
        "Fig. 2: eval loss vs learning rate",
        size=(5.0, 3.8) if by_batch else (7.5, 4.2),
    )
    for row, model in enumerate(models):
        mine = points[points["model"].eq(model)]
        batch_ref, tokens_ref = (
            _middle(mine["batch_size"]),
            _middle(mine["tokens"]),
        )  # like the paper's B=128, T=128B
        _loss_panel(
            axes[row, 0],
            mine[mine["batch_size"].eq(batch_ref)],
            cells,
            "tokens",
            f"{model}, batch size {batch_ref} sequences",
            lr_axis,
        )
        if by_batch:
            _loss_panel(
                axes[row, 1],
                mine[mine["tokens"].eq(tokens_ref)],
                cells,
                "batch_size",
                f"{model}, T = {_tick(tokens_ref)} tokens",
                lr_axis,
            )
    return fig


def _middle(values: pd.Series):
    ordered = sorted(values.unique().tolist())
    return ordered[len(ordered) // 2]


def _loss_panel(ax, points: pd.DataFrame, cells: pd.DataFrame, by: str, title: str, lr_axis: str) -> None:
    colours = _colours(points[by])
    finite = np.isfinite(points["loss"])
    top = points.loc[finite, "loss"].max() if finite.any() else 1.0
    for value, group in points.groupby(by, sort=True):
        ok = np.isfinite(group["loss"])
        label = _tick(value) if by == "tokens" else f"B={value}"
        ax.plot(group.loc[ok, "lr"], group.loc[ok, "loss"], "o-", ms=3, color=colours[value], label=label)
        ax.plot(group.loc[~ok, "lr"], np.full((~ok).sum(), top), "x", color=colours[value])
        cell = cells[
            cells["model"].eq(group["model"].iloc[0])
            & cells["tokens"].eq(group["tokens"].iloc[0])
            & cells["batch_size"].eq(group["batch_size"].iloc[0])
        ]
        if len(cell) and np.isfinite(cell["lr_opt"].iloc[0]):
            # on its curve, not a line across the others: which optimum is whose reads at a glance
            ax.plot(
                cell["lr_opt"].iloc[0],
                cell["loss_opt"].iloc[0],
                "*",
                ms=9,
                color=colours[value],
                mec="k",
                mew=0.5,
                zorder=3,
            )
    _log_axes(ax, f"{lr_axis} (x: diverged, *: lr_opt)", "eval loss (nats/token)", title, logy=False)
    _legend(ax, fontsize="x-small")


def fig_lr_opt_vs_batch(
    gamma: GammaFits,
    *,
    laws: Mapping[str, BatchLaw] | None = None,
    pooled: bool = True,
    lr_axis: str = LR_AXIS,
) -> Figure:
    """Fig. 3: lr_opt against batch size per T, one panel per model (4 per row); dashed: the model's batch law
    c * B**alpha * T**beta where ``laws`` has one, else the pooled fit B * a * T**b when ``pooled``."""
    cells = gamma.cells[np.isfinite(gamma.cells["lr_opt"])]
    models = model_order(cells)
    fig, axes = _panels(len(models), "Fig. 3: optimal lr vs batch size (dashed: the fitted law)")
    colours = _colours(cells["tokens"])
    for ax, model in zip(axes, models):
        law = (laws or {}).get(model)
        for t, group in cells[cells["model"].eq(model)].groupby("tokens", sort=True):
            ok = group["ok"].astype(bool)
            ax.errorbar(
                group.loc[ok, "batch_size"],
                group.loc[ok, "lr_opt"],
                yerr=group.loc[ok, "lr_opt_se"],
                fmt="o-",
                ms=3,
                color=colours[t],
                label=_tick(t),
            )
            ax.plot(group.loc[~ok, "batch_size"], group.loc[~ok, "lr_opt"], "o", mfc="none", color=colours[t])
            batch = np.sort(group["batch_size"].to_numpy(float))
            if law is not None and law.ok:
                ax.plot(batch, [law.predict(b, t) for b in batch], "--", lw=0.8, color=colours[t])
            elif pooled and gamma.pooled.ok:
                ax.plot(batch, batch * gamma.pooled.predict(t), "--", lw=0.8, color=colours[t])
        title = f"{model}" + (f", alpha = {law.alpha:.2f}" if law is not None and law.ok else "")
        _log_axes(ax, "batch size (sequences)", f"lr_opt, {lr_axis}", title)
        _swept_ticks(ax.xaxis, cells.loc[cells["model"].eq(model), "batch_size"])
    _figure_legend(fig, axes, fontsize="small", title="T (hollow: flagged)", title_fontsize="small")
    return fig


def fig_gamma_vs_tokens(gamma: GammaFits, *, paper: bool = True, pooled: bool = True) -> Figure:
    """Fig. 4: gamma = lr_opt / B of the kept batch sizes against T, per model (and pooled when ``pooled``),
    with fit and 95% band; the paper's 4.6 * T^-0.51 only when ``paper`` (muP models trained with WSD)."""
    single = len(gamma.per_model) == 1  # its pooled panel would repeat the model's, point for point
    fits = [*gamma.per_model.items()] + (
        [("pooled", gamma.pooled)] if (pooled and not single) or not gamma.per_model else []
    )
    fig, axes = _panels(len(fits), "Fig. 4: gamma = lr_opt / batch size vs training tokens")
    for ax, (name, fit) in zip(axes, fits):
        cells = gamma.cells if name == "pooled" else gamma.cells[gamma.cells["model"].eq(name)]
        used, kept = cells[cells["used"]], cells[cells["top_k"] & ~cells["used"]]
        ax.errorbar(
            used["tokens"],
            used["gamma"],
            yerr=used["gamma"] * used["ln_lr_opt_se"],
            fmt="o",
            ms=3,
            label=f"top-{gamma.top_k} cells",
        )
        if len(kept):  # no legend entry for what is not drawn
            ax.plot(
                kept["tokens"], kept["gamma"], "o", mfc="none", color="grey", label="flagged (not fitted)"
            )
        _draw_fit(ax, fit, cells["tokens"], paper=paper, formula=False)
        title = f"{name}: {fit.a:.3g} * T^{fit.b:.3f}" if fit.ok else f"{name}: not fitted"
        _log_axes(ax, "training tokens T (tokens)", "gamma (lr per sequence)", title)
    _figure_legend(fig, axes, fontsize="small")
    return fig


def _draw_fit(ax, fit: PowerLawFit, x_values, *, paper: bool = True, formula: bool = True) -> None:
    x = np.geomspace(float(np.min(x_values)), float(np.max(x_values)), 100) if len(x_values) else np.empty(0)
    if fit.ok and len(x):
        band = fit.band(x)
        ax.fill_between(x, band.low, band.high, alpha=0.25, color="crimson", label="95% CI")
        ax.plot(
            x, fit.predict(x), color="crimson", label=f"fit {fit.a:.3g} * T^{fit.b:.3f}" if formula else "fit"
        )
    if paper and len(x):
        ax.plot(x, PAPER_A * x**PAPER_B, ":", color="grey", label="paper: 4.6 * T^-0.51")


def fig_power_loss(power: PowerSearch) -> Figure:
    """Fig. 5: loss above each (T, B) group's best run against a (left) and b (right), per T."""
    runs = power.runs[power.runs["finite"]]
    fig, axes = _figure(1, 2, "Fig. 5: Power scheduler search, loss vs a and vs b")
    colours = _colours(runs["tokens"])
    for ax, name in zip(axes[0], ("power_a", "power_b")):
        for t, group in runs.groupby("tokens", sort=True):
            ax.plot(group[name], group["delta_loss"], ".", alpha=0.4, color=colours[t])
            profile = group.groupby(name)["delta_loss"].min()  # best over the other coefficient
            ax.plot(profile.index, profile.to_numpy(), "-", color=colours[t], label=_tick(t))
        ax.set(xlabel=f"{name[-1]} (dimensionless)", ylabel="loss - best loss of its (T, B) (nats/token)")
        ax.xaxis.set_major_locator(MaxNLocator(6))
        ax.grid(True, alpha=0.3)
    _figure_legend(
        fig, axes[0], fontsize="small", title="T (line: best over the other)", title_fontsize="small"
    )
    return fig


def fig_power_best(power: PowerSearch) -> Figure:
    """Fig. 6: the best a and b of each (T, B) against T, with 95% CIs and the overall best."""
    groups = power.per_group
    fig, axes = _figure(1, 2, "Fig. 6: best Power scheduler coefficients vs training tokens")
    colours = _colours(groups["batch_size"])
    batches = sorted(groups["batch_size"].unique())
    overall = power.overall
    for ax, name, best, ci in zip(axes[0], ("a", "b"), (overall.a, overall.b), (overall.a_ci, overall.b_ci)):
        for i, (batch, group) in enumerate(groups.groupby("batch_size", sort=True)):
            err = np.abs(np.vstack([group[name] - group[f"{name}_low"], group[f"{name}_high"] - group[name]]))
            # batch sizes side by side: error bars at one T overlap
            dodge = 1.04 ** (i - (len(batches) - 1) / 2)
            ax.errorbar(
                group["tokens"] * dodge,
                group[name],
                yerr=np.nan_to_num(err),
                fmt="o",
                ms=4,
                capsize=2,
                color=colours[batch],
                label=f"B={batch}",
            )
        ax.axhline(best, color="k", lw=1, label=f"overall {best:.3g}")
        if np.isfinite(ci.low):
            ax.axhspan(ci.low, ci.high, color="k", alpha=0.1)
        ax.set_xscale("log")
        _log_ticks(ax.xaxis, float(groups["tokens"].min()), float(groups["tokens"].max()))
        _swept_ticks(ax.xaxis, groups["tokens"])
        ax.set(xlabel="training tokens T (tokens)", ylabel=f"best {name} (dimensionless)")
        ax.grid(True, alpha=0.3)
        _legend(ax, fontsize="x-small")
    return fig


def fig_critical_batch(cells: pd.DataFrame, critical: CriticalBatch, *, lr_axis: str = LR_AXIS) -> Figure:
    """lr_opt against batch size with the fitted surge curve per T (left);
    Bc against T with its law (right)."""
    fig, axes = _figure(1, 2, "Critical batch size: lr_opt(B) = 2 lr_peak / (sqrt(B/Bc) + sqrt(Bc/B))")
    usable = cells[cells["ok"].astype(bool) & np.isfinite(cells["lr_opt"])]
    colours = _colours(usable["tokens"])
    per = critical.per_tokens
    named = set()
    # models by size, T ascending in each
    ordered = in_model_order(usable.sort_values("tokens", kind="stable"))
    for model, t in dict.fromkeys(zip(ordered["model"], ordered["tokens"])):
        group = usable[usable["model"].eq(model) & usable["tokens"].eq(t)]
        ax = axes[0, 0]
        ax.plot(
            group["batch_size"],
            group["lr_opt"],
            "o",
            ms=3,
            color=colours[t],
            label=None if t in named else f"T = {_tick(t)}",
        )  # the colours need a key even where no line is fitted
        named.add(t)
        fit = per[per["model"].eq(model) & per["tokens"].eq(t)]
        if len(fit) and np.isfinite(fit["bc"].iloc[0]):
            batch = np.geomspace(group["batch_size"].min(), group["batch_size"].max(), 60)
            ax.plot(
                batch,
                surge_curve(batch, fit["lr_peak"].iloc[0], fit["bc"].iloc[0]),
                "-",
                color=colours[t],
                lw=0.8,
                label=f"{model} {_tick(t)}",
            )
    _log_axes(axes[0, 0], "batch size (sequences)", f"lr_opt, {lr_axis}", "lines: Bc inside the swept B")
    _swept_ticks(axes[0, 0].xaxis, usable["batch_size"])
    _legend(axes[0, 0], fontsize="x-small")
    good = per[per["flag"].eq("")]
    if good.empty:
        axes[0, 1].axis("off")  # nothing to plot: say why, wrapped inside the panel
        why = textwrap.fill(f"Bc(T) not fitted: {critical.law.reason}", 45)
        axes[0, 1].text(0.5, 0.5, why, ha="center", va="center", transform=axes[0, 1].transAxes)
        return fig
    axes[0, 1].errorbar(
        good["tokens"], good["bc"], yerr=good["bc"] * good["ln_bc_se"].fillna(0), fmt="o", ms=4
    )
    _draw_fit(axes[0, 1], critical.law, good["tokens"], paper=False)
    _log_axes(
        axes[0, 1],
        "training tokens T (tokens)",
        "critical batch size Bc (sequences)",
        f"Bc = {critical.law.a:.3g} * T^{critical.law.b:.3f}" if critical.law.ok else "Bc(T) not fitted",
    )
    _legend(axes[0, 1], fontsize="x-small")
    return fig


def fig_sensitivity(sens: Sensitivity) -> Figure:
    """Curvature of loss in ln(lr) at the optimum against T (left),
    and the loss of an lr off by 2x (right)."""
    fig, axes = _figure(1, 2, "Sensitivity of the loss to the learning rate")
    per = sens.per_tokens
    for model in model_order(per) if len(per) else []:
        group = per[per["model"].eq(model)]
        axes[0, 0].plot(group["tokens"], group["curvature"], "o-", ms=3, label=model)
        axes[0, 1].plot(group["tokens"], group["penalty_2x"], "o-", ms=3, label=model)
    _draw_fit(axes[0, 0], sens.pooled, per["tokens"], paper=False)
    _log_axes(
        axes[0, 0], "training tokens T (tokens)", "d2 loss / d(ln lr)^2 (nats)", "median over batch sizes"
    )
    _log_axes(axes[0, 1], "training tokens T (tokens)", "loss penalty of lr x2 or /2 (nats/token)")
    _figure_legend(fig, axes[0], fontsize="small")  # the panels share their models: one key, beside both
    return fig


def fig_curves(points: pd.DataFrame, spikes: pd.DataFrame, *, title: str, lr_axis: str = LR_AXIS) -> Figure:
    """Training loss (pooled means, see analysis/run_curves.py) against tokens seen for one cell: one colour
    per peak lr; each lr's trunk, with each budget's decay branch leaving it at its fork; held-out losses as
    dots (at forks and at each budget's end); the flagged runs' spikes as crosses. Left: the whole run; right:
    the decays, zoomed.

    ``points`` are curve points (analysis/run_curves.py) with the lineage's ``peak_lr``; ``spikes`` has
    peak_lr, tokens and loss of each flagged run.
    """
    fig, axes = _figure(1, 2, title, size=(5.6, 4.2))
    colours = _colours(points["peak_lr"])
    train = points[points["kind"].eq("train")]
    decay = train[train["segment"].eq("decay")]
    first_fork = decay["fork_tokens"].min() if len(decay) else train["tokens"].max() / 2
    for ax, low in zip(axes[0], (0.0, first_fork / 2)):
        for lr, lineage in points.groupby("peak_lr", sort=True):
            _draw_lineage(ax, lineage[lineage["tokens"] >= low], colours[lr], f"lr {lr:.3g}")
        shown = spikes[spikes["tokens"] >= low]
        ax.plot(
            shown["tokens"],
            shown["loss"],
            "x",
            color="crimson",
            ms=9,
            mew=2,
            label="spike (flagged run)" if len(shown) else None,
        )
        _loss_limits(ax, points[points["tokens"] >= max(low, train["tokens"].max() / 100)])
    _log_axes(
        axes[0, 0],
        "tokens seen (tokens)",
        "train loss (nats/token)",
        "whole run (dots: held-out loss)",
        logy=False,
    )
    _log_axes(axes[0, 1], "tokens seen (tokens)", "", "decay branches from their forks", logy=False)
    _figure_legend(fig, axes[0], fontsize="small", title=lr_axis)
    return fig


def _draw_lineage(ax, points: pd.DataFrame, colour, label: str) -> None:
    """One lineage: its trunk, then each decay branch joined to the trunk point at its fork."""
    train = points[points["kind"].eq("train")].sort_values("tokens")
    trunk = train[train["segment"].eq("trunk")]
    ax.plot(trunk["tokens"], trunk["loss_train_mean"], "-", color=colour, lw=1.2, label=label)
    for fork, branch in train[train["segment"].eq("decay")].groupby("fork_tokens"):
        line = pd.concat([trunk[trunk["tokens"] <= fork].tail(1), branch])  # leaves the trunk at its fork
        ax.plot(line["tokens"], line["loss_train_mean"], "-", color=colour, lw=0.9, alpha=0.85)
    evals = points[points["kind"].eq("eval")]
    ax.plot(evals["tokens"], evals["loss_eval"], "o", color=colour, ms=3.5, mec="black", mew=0.4)


def _loss_limits(ax, points: pd.DataFrame) -> None:
    """y from just below the lowest loss (train or held-out) to the highest of the later points: the first
    steps' losses (near ln(vocab)) would flatten everything else."""
    loss = np.concatenate([points[c].to_numpy(dtype=float) for c in ("loss_train_mean", "loss_eval")])
    loss = loss[np.isfinite(loss)]
    if len(loss):
        span = max(loss.max() - loss.min(), 1e-3)
        ax.set_ylim(loss.min() - 0.05 * span, loss.max() + 0.05 * span)


def fig_width_transfer(widths: WidthTransfer) -> Figure:
    """Loss against lr, one curve per width (coloured by size), one panel per parametrisation, at the largest
    T where every width has a located lr_opt (``WidthTransfer.figure_group``), as in the muP papers' transfer
    figures. Each width's lr_opt is a star; diverged lrs are crosses on the top edge."""
    chosen = {p: widths.figure_group(p) for p in widths.verdicts}
    chosen = {p: group for p, group in chosen.items() if group is not None}
    title = "Transfer across widths: loss vs lr per width, at the largest T where every width has its lr_opt"
    fig, axes = _panels(len(chosen), title, size=(5.0, 4.0))
    colours = _colours(widths.points["width"]) if len(widths.points) else {}
    for ax, (parametrisation, (tokens, batch_size)) in zip(axes, chosen.items()):
        _width_panel(ax, widths, parametrisation, tokens, batch_size, colours)
    label = "d_model" if widths.width_source == "d_model" else "sqrt(N non-emb.)"
    _figure_legend(fig, axes, fontsize="small", title=f"width ({label})")
    return fig


def _width_panel(ax, widths: WidthTransfer, parametrisation: str, tokens: float, batch_size: int, colours):
    here = {"parametrisation": parametrisation, "tokens": tokens, "batch_size": batch_size}
    points, cells = (
        frame[np.logical_and.reduce([frame[k].eq(v) for k, v in here.items()])]
        for frame in (widths.points, widths.cells)
    )
    finite = np.isfinite(points["loss"])
    top = points.loc[finite, "loss"].max() if finite.any() else 1.0
    for width, curve in points.sort_values("lr").groupby("width", sort=True):
        ok, colour = np.isfinite(curve["loss"]), colours[width]
        ax.plot(curve.loc[ok, "lr"], curve.loc[ok, "loss"], "o-", ms=3, color=colour, label=f"{width:.4g}")
        ax.plot(curve.loc[~ok, "lr"], np.full((~ok).sum(), top), "x", color=colour)
        found = cells[cells["width"].eq(width) & cells["located"]]
        ax.plot(found["lr_opt"], found["loss_opt"], "*", ms=11, color=colour, mec="k", mew=0.6, zorder=3)
    verdict = widths.verdicts[parametrisation]
    mine = widths.cells[widths.cells["parametrisation"].eq(parametrisation)]
    n_located, n_widths = cells.loc[cells["located"], "width"].nunique(), mine["width"].nunique()
    name, ci = PARAMETRISATION_NAMES.get(parametrisation, parametrisation), verdict.ci
    title = (
        f"{name}: T = {_tick(tokens)} tokens, B = {batch_size}"
        + (f"\n(lr_opt at {n_located} of {n_widths} widths)" if n_located < n_widths else "")
        + f"\ndrift {verdict.drift:.2f} [{ci.low:.2f}, {ci.high:.2f}] over all T: {verdict.kind}"
    )
    lr_axis = f"{lr_label(parametrisation)} (x: diverged, *: lr_opt)"
    _log_axes(ax, lr_axis, "eval loss (nats/token)", title, logy=False)
