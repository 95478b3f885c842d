"""The answer a report leads with: the law that holds, its interval, the cells behind it, the lr it recommends
where a user is likely to scale to, the scheduler line to paste, and the fits this table cannot identify.

>>> ans = answer(analyze(table), read_coefficients("out/analysis/coefficients.json"))
>>> ans.law, [r.lr_opt for r in ans.recommendations], [m.fit for m in ans.missing]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# distinct batch sizes for an exponent in B (alpha, Bc(T), B_opt(T))
from powersweep.analysis.band import MIN_BATCH_SIZES
from powersweep.analysis.band import MIN_SIZES as MIN_MODELS  # distinct model sizes for an N law
from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.export import lm_engine_snippet, predict_lr, scheduler_coefficients
from powersweep.analysis.order import model_order
from powersweep.analysis.pipeline import Analysis

MIN_TOKENS = 3  # distinct token budgets for a T exponent with a residual
SCALE_UP = (4, 16, 64)  # recommendations at the largest swept T times these


@dataclass(frozen=True)
class Recommendation:
    """lr_opt where a user is likely to train next, as `powersweep predict` gives it."""

    model: str | None  # None: the pooled law, which holds for every swept model
    batch_size: int  # sequences
    tokens: float
    lr_opt: float
    ci_low: float  # 95%; NaN without bootstrap samples
    ci_high: float


@dataclass(frozen=True)
class Missing:
    """A fit this sweep cannot identify, why, and what to sweep so it can."""

    fit: str
    why: str
    sweep: str


@dataclass(frozen=True)
class Answer:
    """What a reader of the report needs first; ``law`` is empty when no law holds (``why`` says why)."""

    law: str  # in words
    formulas: tuple[str, ...]  # the law with numbers and 95% CIs, one line per model where laws differ
    n_cells: int  # cells (model, batch, T) in the fit that answers
    n_cells_total: int
    recommendations: tuple[Recommendation, ...]
    scheduler: str  # the Power schedule with the fitted numbers, for the recommended batch size
    snippet: dict | None  # lm-engine config fragment; None with ``snippet_note`` saying why
    snippet_note: str
    missing: tuple[Missing, ...]
    why: str = ""  # why there is no law


def answer(result: Analysis, coefficients: dict | None) -> Answer:
    """Build the answer from the analysis and the coefficients file's content
    (None when it was not written)."""
    missing = tuple(missing_fits(result))
    total = len(result.cells)
    if coefficients is None or result.headline == "none":
        why = result.gamma.pooled.reason if result.gamma is not None else "no runs with a fixed peak lr"
        return Answer("", (), 0, total, (), "", None, "", missing, why=why)
    model = _answering_model(result)
    recs = tuple(recommendations(result, coefficients, model=model))
    scheduler, snippet, note = _scheduler(result, coefficients, model, recs)
    return Answer(
        _law_words(result, model),
        tuple(_formulas(result)),
        _n_cells(result),
        total,
        recs,
        scheduler,
        snippet,
        note,
        missing,
    )


def counts(result: Analysis) -> dict[str, int]:
    """Distinct batch sizes, models and token budgets among the analysed cells."""
    cells = result.cells
    return {key: int(cells[key].nunique()) if len(cells) else 0 for key in ("batch_size", "model", "tokens")}


def missing_fits(result: Analysis) -> list[Missing]:
    """The fits the swept grid cannot identify, each with what to sweep instead."""
    n = counts(result)
    out = []
    if n["batch_size"] < MIN_BATCH_SIZES:
        out.append(
            Missing(
                "batch-size scaling (lr_opt ~ B^alpha, critical batch size Bc(T), best batch size B_opt(T))",
                f"the sweep has {_plural(n['batch_size'], 'batch size')}",
                f"sweep at least {MIN_BATCH_SIZES} batch sizes, e.g. 4x apart",
            )
        )
    if n["model"] < MIN_MODELS:
        out.append(
            Missing(
                "model-size scaling (lr_opt as a function of N, transfer across sizes)",
                f"the sweep has {_plural(n['model'], 'model size')}",
                f"sweep at least {MIN_MODELS} model sizes spanning 2x or more in parameters",
            )
        )
    if n["tokens"] < MIN_TOKENS:
        out.append(
            Missing(
                "the T exponent b",
                f"the sweep has {_plural(n['tokens'], 'token budget')}",
                f"sweep at least {MIN_TOKENS} token budgets, e.g. 2x apart",
            )
        )
    return out


def batch_identified(result: Analysis) -> bool:
    return counts(result)["batch_size"] >= MIN_BATCH_SIZES


def models_compared(result: Analysis) -> bool:
    return counts(result)["model"] >= 2


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _answering_model(result: Analysis) -> str | None:
    """None for the pooled law; else the largest swept model, the one a user scales from."""
    if result.headline == "pooled_gamma":
        return None
    cells = result.cells
    sized = cells[np.isfinite(cells["n_params"])] if "n_params" in cells else cells.iloc[:0]
    return model_order(sized if len(sized) else cells)[-1]  # the largest model of known size, if any is known


def recommendations(result: Analysis, coefficients: dict, *, model: str | None) -> list[Recommendation]:
    """lr_opt at the swept batch sizes (at most three: smallest, middle, largest) and the largest swept T
    times ``SCALE_UP``, from the same coefficients and function as `powersweep predict`."""
    used = result.cells.loc[result.cells["used"].astype(bool)]
    swept = sorted({int(b) for b in used["batch_size"]})
    batches = sorted({swept[0], swept[len(swept) // 2], swept[-1]})
    top = float(used["tokens"].max())
    out = []
    for batch in batches:
        for factor in SCALE_UP:
            pred = predict_lr(coefficients, batch_size=batch, tokens=top * factor, model=model)
            out.append(Recommendation(model, batch, top * factor, pred.lr_opt, pred.ci_low, pred.ci_high))
    return out


def _law_words(result: Analysis, model: str | None) -> str:
    if result.headline == "per_model_batch_law":
        return (
            "The optimal peak lr follows lr_opt = c * B^alpha * T^beta for each model: it does not grow in "
            "proportion to the batch size here, so each model has its own law "
            f"(recommendations: model {model})."
        )
    if result.headline == "per_model_gamma":
        return (
            "The optimal peak lr grows in proportion to the batch size and falls as a power of the training "
            "tokens T, but the models' laws differ, so each has its own (recommendations: the largest, "
            f"model {model})."
        )
    b = result.gamma.pooled.b
    trend = (
        f"{'falls' if b < 0 else 'rises'} as T^{b:.2f} with the training tokens T: doubling T "
        f"multiplies it by {2**b:.2f}"
    )
    if not batch_identified(result):  # proportional to B is the paper's finding, not this sweep's
        swept = ", ".join(str(int(v)) for v in sorted(result.cells["batch_size"].unique()))
        return (
            f"The optimal peak lr {trend}, measured at batch size {swept} sequences; at other batch sizes "
            "it is taken to grow in proportion to B, as the paper finds (this sweep cannot test that)."
        )
    return f"The optimal peak lr grows in proportion to the batch size B and {trend}."


def _formulas(result: Analysis) -> list[str]:
    gamma = result.gamma
    if result.headline == "per_model_batch_law":
        return [
            f"model {name}: lr_opt = {np.exp(law.coef['ln_c']):.3g} * B^{law.alpha:.3f} * "
            f"T^{law.coef['beta']:.3f}; alpha 95% CI [{law.alpha_ci.low:.3f}, {law.alpha_ci.high:.3f}], "
            f"beta 95% CI [{law.ci['beta'].low:.3f}, {law.ci['beta'].high:.3f}]"
            for name, law in result.batch.items()
            if law.ok
        ]
    fits = gamma.per_model.items() if result.headline == "per_model_gamma" else [(None, gamma.pooled)]
    return [
        ("" if name is None else f"model {name}: ")
        + f"lr_opt = B * a * T^b with a = {fit.a:.4g} (95% CI {fit.a_ci.low:.4g} to {fit.a_ci.high:.4g}), "
        f"b = {fit.b:.4f} (95% CI {fit.b_ci.low:.4f} to {fit.b_ci.high:.4f})"
        for name, fit in fits
        if fit.ok
    ]


def _n_cells(result: Analysis) -> int:
    if result.headline == "per_model_batch_law":
        return sum(law.n_cells for law in result.batch.values() if law.ok)
    if result.headline == "per_model_gamma":
        return sum(f.n_points for f in result.gamma.per_model.values() if f.ok)
    return result.gamma.pooled.n_points


def _scheduler(
    result: Analysis, coefficients: dict, model: str | None, recs: tuple[Recommendation, ...]
) -> tuple[str, dict | None, str]:
    """The Power schedule line at the largest recommended batch size, and lm-engine's fragment for it."""
    batch = max(r.batch_size for r in recs)
    law = scheduler_coefficients(coefficients, model=model, batch_size=batch)
    lr_max = coefficients.get("lr_max")
    cap = f"{lr_max:.3g}" if lr_max is not None else "lr_max"
    line = (
        f"lr(n) = min({cap}, {batch} * {law['a']:.4g} * n**{law['b']:.4f})  # n: tokens seen, batch "
        f"{batch} sequences"
    )
    seq = result.table["seq_len"].dropna() if "seq_len" in result.table else []
    if len(seq) == 0:
        return (
            line,
            None,
            "the table has no seq_len: run `powersweep predict ... --seq-len L` for lm-engine's fragment",
        )
    seq_len = int(seq.max())
    if lr_max is None:
        return (
            line,
            None,
            (
                f"no run diverged, so the sweep sets no lr_max: choose one and run `powersweep predict "
                f"--coefficients coefficients.json --batch-size {batch} --tokens T --seq-len {seq_len} "
                "--lr-max LR`"
            ),
        )
    try:
        snippet = lm_engine_snippet(law, batch_size=batch, seq_len=seq_len)
    except AnalysisError as error:
        return line, None, str(error)
    return line, snippet, f"lm-engine, batch {batch} sequences of {seq_len} tokens"
