"""An analysis in a few lines for a terminal: where the report went, the law that holds, a prediction.

>>> print("\\n".join(report_lines(result, write_report(table, "out", result=result))))
>>> check_coefficients(result, paths)   # AnalysisError when the gamma fit failed
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from powersweep.analysis.errors import AnalysisError

if TYPE_CHECKING:
    from powersweep.analysis.export import JointPrediction, Prediction
    from powersweep.analysis.pipeline import Analysis
    from powersweep.analysis.report import ReportPaths

EXTRAPOLATION_NOTE = 1.5  # a prediction this many times outside the swept tokens gets a note


def report_lines(result: Analysis, paths: ReportPaths) -> list[str]:
    """Where the report, cells and figures went, the (a, b) search's best, and the coefficients with the
    headline laws (or why none were written: power runs only)."""
    lines = [
        f"report:        {paths.index_html}",
        f"cells:         {paths.cells_csv}",
        f"figures:       {len(paths.figures)} written to {paths.index_html.parent}"
        + (f", skipped: {', '.join(paths.skipped)}" if paths.skipped else ""),
    ]
    if result.power is not None:
        lines.append(power_line(result.power.overall))
    if paths.coefficients is not None:
        return lines + [f"coefficients:  {paths.coefficients}"] + headline_lines(result)
    if _power_only(result):
        lines.append(
            "coefficients:  not written: the gamma law needs runs with a fixed peak lr (wsd, cosine, "
            "constant); this table has power runs only, whose best (a, b) is above"
        )
    return lines


def check_coefficients(result: Analysis, paths: ReportPaths) -> None:
    """Raise AnalysisError when no coefficients were written because the gamma fit failed."""
    if paths.coefficients is None and not _power_only(result):
        reason = result.gamma.pooled.reason if result.gamma is not None else "no runs with a fixed peak lr"
        raise AnalysisError(
            f"no coefficients written: the gamma fit failed ({reason}); see {paths.index_html}"
        )


def _power_only(result: Analysis) -> bool:
    return result.schedule is None and result.power is not None


def headline_lines(result: Analysis) -> list[str]:
    """The law that holds for this table, one line per fit."""
    gamma = result.gamma
    if result.headline == "per_model_batch_law":
        return [
            "headline:      lr_opt = c * B^alpha * T^beta per model (gamma is not batch-invariant here)"
        ] + [
            f"  model {name}: alpha = {law.alpha:.3f} (95% CI {law.alpha_ci.low:.3f} to "
            f"{law.alpha_ci.high:.3f}), beta = {law.coef['beta']:.3f} (95% CI {law.ci['beta'].low:.3f} to "
            f"{law.ci['beta'].high:.3f}), {law.n_cells} cells"
            for name, law in result.batch.items()
            if law.ok
        ]
    fits = gamma.per_model.items() if result.headline == "per_model_gamma" else [("pooled", gamma.pooled)]
    head = (
        "headline:      gamma = a * T^b per model (the models' laws differ; the pooled law is not used)"
        if result.headline == "per_model_gamma"
        else "headline:      gamma = a * T^b pooled over models"
    )
    return [head] + [
        f"gamma = lr_opt / batch_size = a * T^b ({name}) with a = {fit.a:.4g} (95% CI "
        f"{fit.a_ci.low:.4g} to {fit.a_ci.high:.4g}), b = {fit.b:.4f} (95% CI {fit.b_ci.low:.4f} to "
        f"{fit.b_ci.high:.4f}), {fit.n_points} cells"
        for name, fit in fits
        if fit.ok
    ]


def power_line(best) -> str:
    """The (a, b) search's best Power-scheduler coefficients, one line."""
    return (
        f"power search:  a = {best.a:.4g} (95% CI {best.a_ci.low:.4g} to {best.a_ci.high:.4g}), "
        f"b = {best.b:.4f} (95% CI {best.b_ci.low:.4f} to {best.b_ci.high:.4f}), {best.method}, "
        f"{best.n_runs} runs"
    )


def prediction_lines(pred: Prediction, coefficients: dict, *, batch_size: float, tokens: float) -> list[str]:
    """lr_opt with its 95% CI and the law behind it, then notes: the law's own, an extrapolation in tokens,
    an lr_opt above the suggested lr_max."""
    lines = [
        f"lr_opt = {pred.lr_opt:.4g} (95% CI {pred.ci_low:.4g} to {pred.ci_high:.4g}, {pred.ci_method}) "
        f"for batch_size = {batch_size:g} sequences, tokens = {tokens:g}; law: {pred.law}"
    ]
    lines += [f"note: {note}" for note in pred.notes]
    if pred.extrapolation > EXTRAPOLATION_NOTE:
        lines.append(
            f"note: tokens = {tokens:g} is {pred.extrapolation:.3g}x outside the swept token range "
            f"{coefficients.get('tokens_range')}: an extrapolation"
        )
    lr_max = coefficients.get("lr_max")
    if lr_max is not None and pred.lr_opt > lr_max:
        lines.append(f"note: lr_opt exceeds the suggested lr_max = {lr_max:.4g}")
    return lines


def joint_prediction_lines(pred: JointPrediction, *, tokens: float, n_params: float | None) -> list[str]:
    """lr_opt (and batch_opt where the band fit has a batch law) from the joint law, then its notes."""
    size = "" if n_params is None else f"n_params = {n_params:g}, "
    batch = (
        ""
        if pred.batch_opt != pred.batch_opt
        # NaN: no batch law (a note says why)
        else (
            f" and batch_opt = {pred.batch_opt:.4g} sequences (95% CI {pred.batch_ci[0]:.4g} to "
            f"{pred.batch_ci[1]:.4g})"
        )
    )
    return [
        f"lr_opt = {pred.lr_opt:.4g} (95% CI {pred.lr_ci[0]:.4g} to {pred.lr_ci[1]:.4g}){batch} for {size}"
        f"tokens = {tokens:g}; law: joint band fit"
    ] + [f"note: {note}" for note in pred.notes]
