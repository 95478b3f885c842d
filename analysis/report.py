"""Write a whole report: figures (PNG and SVG), index.html, cells.csv and coefficients.json.

>>> paths = write_report(load_table("runs/"), "out/analysis")
>>> paths.index_html
PosixPath('out/analysis/index.html')
"""

from __future__ import annotations

import functools
import html
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from powersweep.analysis import plots
from powersweep.analysis.answer import SCALE_UP, Answer, answer, batch_identified, models_compared
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.export import FORMULA, read_coefficients, suggest_lr_max, write_coefficients
from powersweep.analysis.fit import PowerLawFit
from powersweep.analysis.optimum import lr_points
from powersweep.analysis.pipeline import HEADLINES, Analysis, analyze
from powersweep.analysis.run_curves import CellCurves, cell_curves
from powersweep.analysis.width_transfer import PARAMETRISATION_NAMES, WIDTH_SOURCES, Verdict, WidthTransfer


@dataclass(frozen=True)
class ReportPaths:
    """Everything ``write_report`` wrote."""

    index_html: Path
    cells_csv: Path
    coefficients: Path | None  # None when the gamma fit failed (the page says why)
    figures: dict[str, plots.FigureFiles]
    skipped: dict[str, str]  # figure stem -> why it was not drawn


def write_report(
    table: pd.DataFrame,
    out_dir: str | Path,
    *,
    result: Analysis | None = None,
    schedules: Mapping[str, plots.Curve] | None = None,
    figures: bool = True,
    refresh_s: float | None = None,
    curves: pd.DataFrame | None = None,
    curves_cell: str | None = None,
    **options,
) -> ReportPaths:
    """Analyse ``table`` (or reuse ``result``) and write the report under ``out_dir``.

    ``schedules`` feeds Fig. 1 ({name: (tokens, lr)} or {name: callable}); by default Fig. 1 shows
    the fitted Power schedule. ``options`` go to ``analyze`` (top_k, n_boot, seed, schedule, ...).
    Figures whose data are absent are skipped and the page says why. ``refresh_s`` makes the page reload
    itself every so many seconds (for watching a sweep fill in). ``curves`` (analysis.run_curves.load_curves)
    feed the loss-curve figure of the cell ``curves_cell`` ('MODEL:BATCH'; default: the cell with the most lrs
    at its largest T)."""
    result = result if result is not None else analyze(table, **options)
    cell = _curve_cell(result, curves, curves_cell)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cells_csv = out / "cells.csv"
    result.cells.drop(columns=["ln_lr_opt_draws"], errors="ignore").to_csv(cells_csv, index=False)
    coefficients = _try_coefficients(result, out / "coefficients.json")
    drawn, skipped = (
        _write_figures(result, out, schedules, cell) if figures else ({}, {"all": "figures=False"})
    )
    ans = answer(result, read_coefficients(coefficients) if coefficients is not None else None)
    index = out / "index.html"
    _write_atomic(index, _page(result, ans, drawn, skipped, coefficients is not None, refresh_s))
    return ReportPaths(index, cells_csv, coefficients, drawn, skipped)


def write_waiting_page(out_dir: str | Path, why: str, *, refresh_s: float) -> Path:
    """A page that says the table cannot be analysed yet, and reloads itself (watch mode)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index = out / "index.html"
    _write_atomic(
        index,
        f"{_head(refresh_s)}<h1>Learning-rate law of the sweep</h1><section id='answer'>"
        f"<p>Waiting for results: {_prose(why)}</p></section></body></html>",
    )
    return index


def _write_atomic(path: Path, text: str) -> None:
    # a browser reloading the page mid-write (watch mode) must see the old page or the new one, never half
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _try_coefficients(result: Analysis, path: Path) -> Path | None:
    try:
        return write_coefficients(result, path)
    except AnalysisError:
        path.unlink(missing_ok=True)  # a stale file from an earlier run must not pass for this one
        return None


CAPTIONS = {
    "fig0_curves": (
        "Loss curves of one cell: one colour per lr, decay branches leaving the trunk at their forks"
    ),
    "fig1_schedules": "Fig. 1: learning-rate schedules",
    "fig2_loss_vs_lr": "Fig. 2: loss vs lr per T and per batch size",
    "fig3_lr_opt_vs_batch": "Fig. 3: lr_opt vs batch size per T",
    "fig4_gamma_vs_tokens": "Fig. 4: gamma vs T with fit and 95% band, per model size",
    "fig5_power_loss": "Fig. 5: Power search, loss vs a and vs b",
    "fig6_power_best": "Fig. 6: best (a, b) vs T",
    "fig7_critical_batch": "lr_opt vs batch size with the fitted critical batch size Bc(T)",
    "fig8_sensitivity": "Sensitivity of the loss to the lr vs T",
    "fig9_width_transfer": (
        "Transfer across widths: loss vs lr, one curve per width, per parametrisation (stars: lr_opt)"
    ),
}


# What each figure shows, for readers who cannot see it (the img's alt text).
ALT_TEXTS = {
    "fig0_curves": (
        "Eval loss against tokens seen for one model and batch size, one line per peak learning rate: "
        "the trunk of each run, then its decay branches from their forks"
    ),
    "fig1_schedules": "Learning rate against tokens seen, one line per schedule",
    "fig2_loss_vs_lr": (
        "Eval loss against peak learning rate for each model, one curve per token budget at one batch size "
        "and one per batch size at one token budget; crosses mark diverged runs, stars the optimal rate"
    ),
    "fig3_lr_opt_vs_batch": (
        "Optimal learning rate against batch size on log axes, one series per token budget, for each model, "
        "with the fitted law as dashed lines"
    ),
    "fig4_gamma_vs_tokens": (
        "gamma, the optimal learning rate divided by batch size, against training tokens on log axes for "
        "each model, with the fitted power law and its 95% band"
    ),
    "fig5_power_loss": (
        "Power scheduler search: loss above the best run of its group against a and against b, one colour "
        "per token budget"
    ),
    "fig6_power_best": (
        "Best Power scheduler a and b of each group against training tokens, with 95% intervals and the "
        "overall best as a horizontal line"
    ),
    "fig7_critical_batch": (
        "Optimal learning rate against batch size with the fitted critical-batch curve per token budget, "
        "and the critical batch size against training tokens with its law"
    ),
    "fig8_sensitivity": (
        "Curvature of the loss in ln(lr) and the loss penalty of doubling or halving the rate, against "
        "training tokens, per model"
    ),
    "fig9_width_transfer": (
        "Eval loss against learning rate, one curve per model width, per parametrisation; stars mark each "
        "width's optimal rate"
    ),
}


def _curve_cell(result: Analysis, curves: pd.DataFrame | None, cell: str | None) -> CellCurves | str | None:
    """The curves the report draws, or why there are none (a bad ``cell`` raises AnalysisError); None when no
    curves were given (the figure is left out)."""
    if curves is None:
        return None
    if not len(curves):
        return (
            "no training curves beside the results (sweeps store them under curves/ since they were added, "
            "unless the spec says run.curves: false)"
        )
    if result.schedule is None:
        return "no runs with a fixed peak lr to draw one curve per lr"
    table = result.table[result.table["schedule"].eq(result.schedule)]
    return cell_curves(table, curves, cell)


def _figure_plan(
    result: Analysis, schedules, cell: CellCurves | str | None = None
) -> dict[str, tuple[Callable[[], Figure] | None, str]]:
    """stem -> (builder, or None with the reason it is skipped)."""
    part = functools.partial
    cells, power = result.cells, result.power
    gamma_ok = result.gamma is not None and result.gamma.pooled.ok
    pooled = result.headline == "pooled_gamma"
    curves = schedules or (_fitted_power_curves(result) if gamma_ok and pooled else None)
    lr_axis = plots.lr_label(result.parametrisation)
    swept = cells["tokens"] if len(cells) else result.table["tokens"]
    tokens = np.geomspace(float(swept.min()) / 4, float(swept.max()), 400) if len(swept) else None
    no_cells = None if len(cells) else "no runs with a fixed peak lr (wsd, cosine, constant)"
    no_power = None if power is not None else "no runs with schedule 'power'"
    no_batch = no_cells or (
        None
        if batch_identified(result)
        else "the sweep has too few batch sizes to fit a batch-size law (see the answer at the top)"
    )
    sens = result.sensitivity
    no_sens = no_cells or (
        None if sens is not None and len(sens.per_tokens) else "no cell with a convex optimum"
    )
    plan = {
        "fig0_curves": (
            isinstance(cell, CellCurves)
            and part(
                plots.fig_curves,
                cell.points,
                cell.spikes,
                lr_axis=lr_axis,
                title=f"Loss curves: {cell.model}, batch "
                f"size {cell.batch_size} sequences (another cell: --curves-cell MODEL:BATCH)",
            ),
            str(cell),
        ),
        "fig1_schedules": (
            curves and part(plots.fig_schedules, curves, tokens=tokens, lr_axis=lr_axis),
            "no schedules given and no pooled law that holds for this table (see the headline)",
        ),
        "fig2_loss_vs_lr": (not no_cells and part(_fig2, result, lr_axis), no_cells),
        "fig3_lr_opt_vs_batch": (
            not no_batch
            and part(
                plots.fig_lr_opt_vs_batch,
                result.gamma,
                pooled=pooled,
                lr_axis=lr_axis,
                laws={m: law for m, law in result.batch.items() if not law.linear},
            ),
            no_batch,
        ),
        "fig4_gamma_vs_tokens": (
            not no_cells
            and part(plots.fig_gamma_vs_tokens, result.gamma, paper=result.paper_applies, pooled=pooled),
            no_cells,
        ),
        "fig5_power_loss": (not no_power and part(plots.fig_power_loss, power), no_power),
        "fig6_power_best": (not no_power and part(plots.fig_power_best, power), no_power),
        "fig7_critical_batch": (
            not no_batch and part(plots.fig_critical_batch, cells, result.critical, lr_axis=lr_axis),
            no_batch,
        ),
        "fig8_sensitivity": (not no_sens and part(plots.fig_sensitivity, sens), no_sens),
        "fig9_width_transfer": (
            result.width_transfer is not None and part(plots.fig_width_transfer, result.width_transfer),
            "",
        ),
    }
    if cell is None:
        del plan["fig0_curves"]
    if result.width_transfer is None:  # a sweep of one width, or a table that does not say its widths
        del plan["fig9_width_transfer"]
    return {stem: (build or None, why) for stem, (build, why) in plan.items()}


def _fig2(result: Analysis, lr_axis: str) -> Figure:
    return plots.fig_loss_vs_lr(
        lr_points(result.table, schedule=result.schedule), result.cells, lr_axis=lr_axis
    )


def _fitted_power_curves(result: Analysis) -> dict[str, Callable]:
    fit = result.gamma.pooled
    lr_max = suggest_lr_max(result.table, schedule=result.schedule) or np.inf
    used = result.cells.loc[result.cells["used"], "batch_size"]
    batches = sorted({int(used.min()), int(used.median()), int(used.max())})
    return {
        f"Power, B={b}" + ("" if np.isinf(lr_max) else f", lr_max={lr_max:.3g}"): functools.partial(
            _power_lr, a=fit.a, b=fit.b, batch_size=b, lr_max=lr_max
        )
        for b in batches
    }


def _power_lr(tokens: np.ndarray, *, a: float, b: float, batch_size: int, lr_max: float) -> np.ndarray:
    return np.minimum(lr_max, batch_size * a * tokens**b)


def _write_figures(
    result: Analysis, out: Path, schedules, cell: CellCurves | str | None
) -> tuple[dict, dict]:
    drawn, skipped = {}, {}
    for stem, (build, why) in _figure_plan(result, schedules, cell).items():
        if not build:
            skipped[stem] = why
            continue
        drawn[stem] = plots.save_figures(build, out, stem)  # and the narrow layout, for a phone
    return drawn, skipped


def _page(
    result: Analysis, ans: Answer, drawn: dict, skipped: dict, has_coefficients: bool, refresh_s: float | None
) -> str:
    """The answer first, then the figures, then the details and tables."""
    parts = [
        _head(refresh_s),
        "<h1>Learning-rate law of the sweep</h1>",
        _answer_section(ans, _width_warnings(result.width_transfer)),
        _figures_section(drawn, skipped),
        "<h2>Details</h2>",
        _summary(result, has_coefficients),
    ]
    parts += [
        _batch_section(result),
        _gamma_section(result),
        _width_section(result.width_transfer),
        _critical_section(result),
        _sensitivity_section(result),
        _band_section(result),
    ]
    parts += [_power_section(result), "</body></html>"]
    return "\n".join(p for p in parts if p)


NARROW_MAX_PX = 700  # up to this viewport width the page shows the figures' narrow layout


def _head(refresh_s: float | None = None) -> str:
    """The page's head. On a phone nothing is wider than the screen: text and code wrap, tables scroll
    in their own box, figures shrink to the width (and come in their one-column layout)."""
    refresh = f"<meta http-equiv='refresh' content='{refresh_s:g}'>" if refresh_s else ""
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        + refresh
        + "<title>powersweep analysis</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em;line-height:1.4;"
        "overflow-wrap:break-word}"
        "table{border-collapse:collapse;font-size:small}td,th{border:1px solid #ccc;padding:2px 6px}"
        "td{text-align:right;white-space:nowrap}th{background:#f3f3f3}.scroll{overflow-x:auto;max-width:100%}"
        "#answer{border:2px solid #2a6;border-radius:6px;padding:0.5em 1.2em;background:#f6fbf7}"
        "#answer .law{font-size:1.15em}code{overflow-wrap:anywhere}"
        "pre{background:#fff;border:1px solid #ccc;padding:0.5em;white-space:pre-wrap;overflow-wrap:anywhere}"
        ".missing{color:#864}figure{margin:1em 0}img{max-width:100%;height:auto}"
        f"@media (max-width:{NARROW_MAX_PX}px){{body{{padding:0.5em}}#answer{{padding:0.3em 0.6em}}"
        "ul{padding-left:1.2em}}</style></head><body>"
    )


def _answer_section(ans: Answer, warnings: tuple[str, ...] = ()) -> str:
    """The block a reader sees first: warnings, law, interval, cells, recommendations, scheduler line, missing
    fits."""
    parts = ["<section id='answer'><h2>Answer</h2>"]
    parts += [f"<p class='warning'><b>Warning:</b> {_prose(w)}</p>" for w in warnings]
    if not ans.law:
        parts.append(f"<p class='law'><b>No law could be fitted:</b> {_prose(ans.why)}.</p>")
    else:
        parts.append(f"<p class='law'>{_esc(ans.law)}</p>")
        parts.append(
            "<ul class='formulas'>"
            + "".join(f"<li><code>{_esc(f)}</code></li>" for f in ans.formulas)
            + "</ul>"
        )
        parts.append(
            f"<p class='cells'>Backed by {ans.n_cells} of {ans.n_cells_total} cells (model, batch size, "
            "T): each cell's optimum is located on its own lr grid.</p>"
        )
        parts.append(_recommendations(ans))
        parts.append(
            f"<p>Power schedule to use (paste):</p><pre class='scheduler'>{_esc(ans.scheduler)}</pre>"
        )
        parts.append(_snippet(ans))
    if ans.missing:
        items = "".join(
            f"<li><b>{_esc(m.fit)}</b>: {_prose(m.why)}; {_prose(m.sweep)}.</li>" for m in ans.missing
        )
        parts.append(
            f"<div class='missing'><p>Not identified by this sweep (not shown as results):</p>"
            f"<ul>{items}</ul></div>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def _recommendations(ans: Answer) -> str:
    """One row per batch size, one column per T: lr_opt and its 95% CI."""
    recs = ans.recommendations
    if not recs:
        return ""
    model = recs[0].model
    rows = {}
    for r in recs:
        ci = f" ({r.ci_low:.3g} to {r.ci_high:.3g})" if np.isfinite(r.ci_low) else ""
        rows.setdefault(r.batch_size, {"batch size (sequences)": r.batch_size})[
            f"T = {_tokens(r.tokens)}"
        ] = f"{r.lr_opt:.3g}{ci}"
    top = min(r.tokens for r in recs) / min(SCALE_UP)
    scales = ", ".join(f"{f}x" for f in SCALE_UP)
    who = "any of the swept models (the pooled law)" if model is None else f"model {_esc(model)}"
    return (
        f"<p>Recommended peak lr (95% CI) for {who} at {scales} the largest swept T ({_tokens(top)} tokens), "
        "beyond the swept range, so extrapolations; <code>powersweep predict</code> gives the same "
        "numbers:</p>" + _table(pd.DataFrame(list(rows.values())), table_id="recommendations")
    )


def _tokens(tokens: float) -> str:
    """1.6e10 -> '16B': token counts as people say them."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if tokens >= scale:
            return f"{tokens / scale:.3g}{suffix}"
    return f"{tokens:.3g}"


def _snippet(ans: Answer) -> str:
    if ans.snippet is None:
        return f"<p>lm-engine fragment: {_prose(ans.snippet_note)}.</p>"
    return (
        f"<p>Scheduler for {_prose(ans.snippet_note)}:</p>"
        f"<pre class='snippet'>{_esc(json.dumps(_rounded(ans.snippet), indent=2))}</pre>"
    )


def _rounded(value):
    """Floats to 4 significant digits:
    the law's own CIs are far wider, and 889.5406809011157 reads as noise."""
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    return float(f"{value:.4g}") if isinstance(value, float) else value


def _esc(text) -> str:
    return html.escape(str(text))


def _prose(text) -> str:
    """Escaped text with its `command` spans set as code, not shown as backticks."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _esc(text))


def _table(frame: pd.DataFrame, *, table_id: str | None = None) -> str:
    """The table in a box of the page's width that scrolls sideways when the table is wider."""
    table = frame.to_html(
        index=False, float_format=lambda v: f"{v:.4g}", na_rep="-", border=0, table_id=table_id
    )
    return f"<div class='scroll'>{table}</div>"


def _summary(result: Analysis, has_coefficients: bool) -> str:
    cells = result.cells
    items = [
        f"<b>headline law: {_esc(HEADLINES[result.headline])}</b>",
        f"schedule analysed for lr_opt: {_esc(result.schedule)}; parametrisation: "
        f"{_esc(result.parametrisation)} (from the table or --schedule / --parametrisation)",
        f"runs: {len(result.table)}",
        f"sweeps: {_esc(', '.join(sorted(set(result.table['sweep_id']))) or '-')}",
        f"cells: {len(cells)}, used in point fits: {int(cells['used'].sum()) if 'used' in cells else 0}",
        "coefficients.json: "
        + ("<a href='coefficients.json'>written</a>" if has_coefficients else "not written"),
        "per-cell table: <a href='cells.csv'>cells.csv</a>",
    ]
    notes = "".join(f"<li>{_prose(n)}</li>" for n in result.notes)
    listed = "<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>"
    return listed + (f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "")


def _fit_row(name: str, fit: PowerLawFit) -> dict:
    hold = fit.holdout
    return {
        "fit": name,
        "a": fit.a,
        "a 95% CI": f"[{fit.a_ci.low:.3g}, {fit.a_ci.high:.3g}]",
        "b": fit.b,
        "b 95% CI": f"[{fit.b_ci.low:.4g}, {fit.b_ci.high:.4g}]",
        "R2 (log)": fit.r2,
        "points": fit.n_points,
        "largest-T held out: predicted/observed": hold.ratio if hold else np.nan,
        "note": fit.reason,
    }


def _batch_section(result: Analysis) -> str:
    if not result.batch or not batch_identified(result):
        return ""
    rows = [
        {
            "model": name,
            "alpha": law.alpha,
            "alpha 95% CI": f"[{law.alpha_ci.low:.3g}, {law.alpha_ci.high:.3g}]",
            "beta": law.coef["beta"],
            "beta 95% CI": f"[{law.ci['beta'].low:.3g}, {law.ci['beta'].high:.3g}]",
            "gamma batch-invariant (alpha = 1 inside CI)": "yes" if law.linear else ("no" if law.ok else "-"),
            "cells": law.n_cells,
            "note": law.reason,
        }
        for name, law in result.batch.items()
    ]
    return (
        "<h2>Batch-size scaling: lr_opt = c * B^alpha * T^beta per model</h2><p>The paper's gamma = lr_opt "
        "/ B assumes alpha = 1. Where alpha's interval excludes 1, gamma is not batch-invariant for this "
        "table and the per-model law above is the one to use "
        f"(<code>predict --model</code>).</p>{_table(pd.DataFrame(rows))}"
    )


def _gamma_section(result: Analysis) -> str:
    if result.gamma is None:
        return ""
    g = result.gamma
    rows = [_fit_row("pooled (weighted, sub-grid lr_opt)", g.pooled)]
    rows += [_fit_row(f"model {m}", f) for m, f in g.per_model.items()] if models_compared(result) else []
    rows.append(_fit_row("paper recipe (grid argmin, mean gamma of top-k, unweighted)", g.paper))
    head = (
        f"<h2>gamma = lr_opt / batch_size = a * T^b</h2><p>Scheduler: <code>{_esc(FORMULA)}</code>; "
        f"top-{g.top_k} batch sizes per (model, T); CIs: "
        f"{_esc(g.pooled.ci_method)}.</p>{_table(pd.DataFrame(rows))}"
    )
    tr = result.transfer
    if not models_compared(result):  # one model: nothing to transfer across
        return head
    agree = (
        f"Across model sizes the b intervals {'overlap' if tr.b_agree else 'do NOT all overlap'}; gamma at "
        f"T = {tr.tokens_ref:.3g} tokens: {'overlap' if tr.gamma_agree else 'do NOT all overlap'}."
    )
    return f"{head}<h3>Transfer across model size</h3><p>{_esc(agree)}</p>{_table(tr.table)}"


def _width_warnings(widths: WidthTransfer | None) -> tuple[str, ...]:
    if widths is None:
        return ()
    return tuple(
        f"under muP, lr_opt moves with width ({v.text}): the proxies' law would not transfer to wider "
        "models; see Transfer across widths"
        for v in widths.verdicts.values()
        if v.warning
    )


def _width_section(widths: WidthTransfer | None) -> str:
    """lr_opt against width per (parametrisation, T, B), each group's drift, and the verdict per
    parametrisation."""
    if widths is None:
        return ""
    verdicts = "".join(
        f"<li><b>{_esc(PARAMETRISATION_NAMES.get(p, p))}</b>: {_prose(v.text)}; {_prose(v.scope)}</li>"
        for p, v in widths.verdicts.items()
    )
    notes = "".join(f"<p>Note: {_prose(n)}</p>" for n in widths.notes)
    return (
        "<h2>Transfer across widths</h2><p>Under muP the optimal lr should not move with width; under "
        "standard parametrisation (SP) with Adam it drifts as width^-1. Drift: the exponent of lr_opt = c * "
        f"width^drift, width = {_esc(WIDTH_SOURCES[widths.width_source])}; lr_opt of each cell with its 95% "
        f"CI, '-' where it was not located.</p><ul class='width-verdicts'>{verdicts}</ul>{notes}"
        + _table(_width_table(widths), table_id="width-transfer")
    )


def _width_table(widths: WidthTransfer) -> pd.DataFrame:
    """One row per (parametrisation, T, B), one column per width: lr_opt (95% CI); then the drift."""
    cells = widths.cells
    name = "d_model" if widths.width_source == "d_model" else "sqrt(N non-emb.)"
    rows = []
    for (p, tokens, batch_size), group in cells.groupby(
        ["parametrisation", "tokens", "batch_size"], sort=False
    ):
        row = {
            "parametrisation": PARAMETRISATION_NAMES.get(p, p),
            "T": _tokens(tokens),
            "batch size": batch_size,
        }
        for width, cell in group.groupby("width"):
            first = cell.iloc[0]
            row[f"{name} {width:.4g}"] = (
                f"{first['lr_opt']:.3g} ({first['lr_opt_low']:.3g} to {first['lr_opt_high']:.3g})"
                if first["located"]
                else "-"
            )
        fit = widths.fits.get((p, float(tokens), int(batch_size)))
        row["drift (95% CI)"] = (
            f"{fit.b:.2f} ({fit.b_ci.low:.2f} to {fit.b_ci.high:.2f})" if fit is not None and fit.ok else "-"
        )
        row["verdict"] = (
            Verdict(p, fit.b, fit.b_ci, "").kind if fit is not None and fit.ok else "fewer than 3 widths"
        )
        rows.append(row)
    return pd.DataFrame(rows).fillna("-")


def _critical_section(result: Analysis) -> str:
    if result.critical is None or not batch_identified(result):
        return ""
    law = result.critical.law
    head = (
        f"Bc = {law.a:.3g} * T^{law.b:.3f}, zeta 95% CI [{law.b_ci.low:.3f}, {law.b_ci.high:.3f}]"
        if law.ok
        else f"Bc(T) not fitted: {law.reason}"
    )
    counts = result.cells["regime"].value_counts().to_dict() if "regime" in result.cells else {}
    return (
        f"<h2>Critical batch size</h2><p>{_esc(head)}. Cell regimes: {_esc(counts)}.</p>"
        f"{_table(result.critical.per_tokens)}"
    )


def _sensitivity_section(result: Analysis) -> str:
    sens = result.sensitivity
    if sens is None or not sens.pooled.ok:
        return ""
    ci = sens.pooled.b_ci
    trend = (
        "falls as T grows (as Time Transfer reports)"
        if ci.high < 0
        else "rises as T grows"
        if ci.low > 0
        else "shows no clear trend with T"
    )
    return (
        f"<h2>Sensitivity to lr</h2><p>curvature d2loss/d(ln lr)^2 = {sens.pooled.a:.3g} * "
        f"T^{sens.pooled.b:.3f} (exponent 95% CI [{ci.low:.3f}, {ci.high:.3f}]): the sensitivity of the "
        f"loss to the lr {trend}.</p>{_table(sens.per_tokens)}"
    )


def _band_section(result: Analysis) -> str:
    band = result.band
    if band is None:
        return ""
    laws = [
        ("lr (band of each (model, T))", band.lr_law),
        ("batch size (same band)", band.batch_law),
        ("gamma (band of each cell)", band.gamma_law),
    ]
    if not batch_identified(result):  # one batch size: ln B is a constant, its "law" a fitted zero
        laws = [laws[0]]
    rows = [
        {
            "law": name,
            "formula": law.formula() if law.ok else "-",
            "95% CIs": _coef_cis(law),
            "points": law.n_points,
            "R2": law.r2,
            "note": law.reason,
        }
        for name, law in laws
    ]
    notes = "".join(f"<p>Note: {_prose(n)}</p>" for n in band.notes)
    return (
        f"<h2>Band fit (Step Law style, eps = {band.eps:g} relative, --band)</h2><p>Exported as "
        "<code>joint_law</code> in coefficients.json (<code>predict --law joint</code>). Compare the gamma "
        f"law's ln_T coefficient with b above.</p>{notes}{_table(pd.DataFrame(rows))}"
    )


def _coef_cis(law) -> str:
    return "; ".join(f"{k}: [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in law.ci.items()) if law.ci else "-"


def _power_section(result: Analysis) -> str:
    if result.power is None:
        return ""
    best = result.power.overall
    text = (
        f"overall best a = {best.a:.3g} (95% CI [{best.a_ci.low:.3g}, {best.a_ci.high:.3g}]), b = "
        f"{best.b:.4g} (95% CI [{best.b_ci.low:.4g}, {best.b_ci.high:.4g}]), method {best.method}"
    )
    return f"<h2>Power scheduler (a, b) search</h2><p>{_esc(text)}</p>{_table(result.power.per_group)}"


def _figures_section(drawn: dict, skipped: dict) -> str:
    """Each figure as SVG (sharp at any size), in its one-column layout on a narrow screen; the PNG where
    a browser shows no SVG."""
    parts = ["<h2>Figures</h2>"]
    for stem, files in drawn.items():
        narrow = (
            f"<source media='(max-width: {NARROW_MAX_PX}px)' srcset='{_esc(files.narrow_svg.name)}' "
            "type='image/svg+xml'>"
            if files.narrow_svg
            else ""
        )
        parts.append(
            f"<figure><picture>{narrow}<source srcset='{_esc(files.svg.name)}' type='image/svg+xml'>"
            f"<img src='{_esc(files.png.name)}' alt='{_esc(ALT_TEXTS[stem])}'></picture><figcaption>"
            f"{_esc(CAPTIONS[stem])} (<a href='{_esc(files.png.name)}'>PNG</a>, "
            f"<a href='{_esc(files.svg.name)}'>SVG</a>)</figcaption></figure>"
        )
    parts += [
        f"<p>Skipped {_esc(CAPTIONS.get(stem, stem))} ({_esc(stem)}): {_prose(why)}</p>"
        for stem, why in skipped.items()
    ]
    return "\n".join(parts)
