"""coefficients.json: the fitted law, its uncertainty and provenance; predictions and an lm-engine snippet.

The file holds the pooled fit gamma = lr_opt / batch_size = a * tokens**b with 95% CIs and the
paired bootstrap samples of (a, b), so that a prediction's CI keeps the strong correlation of
a and b. Units: tokens in tokens, batch_size in sequences (of the sweep's seq_len), lr is the
peak learning rate of the muP base model, before per-layer muP multipliers.

>>> write_coefficients(result, "out/coefficients.json")
>>> predict_lr(read_coefficients("out/coefficients.json"), batch_size=1024, tokens=1e12)
Prediction(lr_opt=..., ci_low=..., ci_high=..., ...)
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from powersweep.analysis.errors import AnalysisError
from powersweep.analysis.fit import CI_LEVEL, PowerLawFit
from powersweep.analysis.order import model_order
from powersweep.analysis.pipeline import Analysis

FORMAT = "powersweep-coefficients/1"
FORMULA = "lr(n) = min(lr_max, batch_size * a * n**b)"
LR_MAX_RULE = (
    "half the smallest peak lr that diverged at the largest batch size with a divergence; "
    "null when none diverged"
)


def suggest_lr_max(table: pd.DataFrame, *, schedule: str | None = None) -> float | None:
    """Half the smallest diverged lr at the largest batch size that saw a divergence; None if none did.

    The Power schedule's cap binds early in a large-batch run, and divergence limits grow with batch size:
    the smallest diverged lr of the whole sweep (a small batch late in training) would cap it far below
    lr_opt. Runs of ``schedule`` (all non-power runs if None) count.
    """
    runs = table[~table["schedule"].eq("power")]
    if schedule is not None:
        runs = runs[runs["schedule"].eq(schedule)]
    diverged = runs[runs["status"].eq("diverged")]
    if diverged.empty:
        return None
    largest = diverged["batch_size"].max()
    return float(diverged.loc[diverged["batch_size"].eq(largest), "lr"].min()) / 2


def coefficients(result: Analysis) -> dict:
    """The contents of coefficients.json (plain JSON types; NaN becomes null)."""
    if result.gamma is None or not result.gamma.pooled.ok:
        reason = "no runs with a fixed peak lr" if result.gamma is None else result.gamma.pooled.reason
        raise AnalysisError(
            f"no coefficients to write: the gamma fit failed ({reason}); see the report's notes"
        )
    pooled = result.gamma.pooled
    content = {
        "format": FORMAT,
        "formula": FORMULA,
        "lr_opt_formula": "lr_opt = batch_size * a * tokens**b",
        **_fit_summary(pooled),
        "ci_level": CI_LEVEL,
        "cov_ln_a_b": pooled.cov.tolist(),
        "bootstrap": {
            "n": len(pooled.boot_b),
            "seed": result.settings.seed,
            "a": np.exp(pooled.boot_ln_a).tolist(),
            "b": pooled.boot_b.tolist(),
        },
        "lr_max": suggest_lr_max(result.table, schedule=result.schedule),
        "lr_max_rule": LR_MAX_RULE,
        "diverged_lr_by_batch_size": _diverged_by_batch(result),
        "tokens_range": [
            float(result.cells.loc[result.cells["used"], "tokens"].min()),
            float(result.cells.loc[result.cells["used"], "tokens"].max()),
        ],
        "units": _units(result.table, result.parametrisation),
        "headline": result.headline,
        "per_model": {
            name: _model_summary(result, name, fit) for name, fit in result.gamma.per_model.items()
        },
        "batch_laws": {name: _batch_summary(law) for name, law in result.batch.items() if law.ok},
        "paper_method": _fit_summary(result.gamma.paper),
        "joint_law": _joint_summary(result),
        "critical_batch": _critical_summary(result),
        "power_search": _power_summary(result),
        "provenance": _provenance(result),
    }
    return _plain(content)


def _fit_summary(fit: PowerLawFit) -> dict:
    return {
        "a": fit.a,
        "b": fit.b,
        "a_ci": [fit.a_ci.low, fit.a_ci.high],
        "b_ci": [fit.b_ci.low, fit.b_ci.high],
        "r2": fit.r2,
        "n_cells": fit.n_points,
        "ci_method": fit.ci_method,
        "holdout": None
        if fit.holdout is None
        else {
            "tokens": fit.holdout.x,
            "ratio": fit.holdout.ratio,
            "abs_log_error": fit.holdout.abs_log_error,
        },
    }


def _model_summary(result: Analysis, name: str, fit: PowerLawFit) -> dict:
    """One model's gamma law with its paired bootstrap samples and the (B, T) ranges its cells span."""
    used = result.cells[result.cells["used"] & result.cells["model"].eq(name)]
    sizes = result.cells.loc[result.cells["model"].eq(name), "n_params"].dropna()
    return _fit_summary(fit) | {
        "n_params": float(sizes.median()) if len(sizes) else None,
        "tokens_range": [float(used["tokens"].min()), float(used["tokens"].max())] if len(used) else None,
        "batch_range": [float(used["batch_size"].min()), float(used["batch_size"].max())]
        if len(used)
        else None,
        "bootstrap": {"a": np.exp(fit.boot_ln_a).tolist(), "b": fit.boot_b.tolist()},
    }


def _batch_summary(law) -> dict:
    ci = {t: [law.ci[t].low, law.ci[t].high] for t in law.ci}
    return {
        "formula": "lr_opt = c * batch_size**alpha * tokens**beta",
        "c": math.exp(law.coef["ln_c"]),
        "alpha": law.alpha,
        "beta": law.coef["beta"],
        "alpha_ci": ci["alpha"],
        "beta_ci": ci["beta"],
        "c_ci": [math.exp(v) for v in ci["ln_c"]],
        "linear": law.linear,
        "n_cells": law.n_cells,
        "batch_range": list(law.batch_range),
        "tokens_range": list(law.tokens_range),
        "bootstrap": {
            "ln_c": law.boot[:, 0].tolist(),
            "alpha": law.boot[:, 1].tolist(),
            "beta": law.boot[:, 2].tolist(),
        },
    }


JOINT_FORMULAS = {
    "lr": "ln lr_opt = const + ln_N * ln(n_params) + ln_T * ln(tokens)",
    "batch": "ln batch_opt = const + ln_T * ln(tokens)  (sequences)",
    "gamma": "ln(lr_opt / batch_size) = const + ln_N * ln(n_params) + ln_T * ln(tokens)",
}


def _joint_summary(result: Analysis) -> dict | None:
    """The band (Step Law style) laws lr(N, T), B_opt(T) and, for muP tables, gamma(N, T),
    with bootstrap CIs."""
    band = result.band
    if band is None:
        return None
    laws = {"lr": band.lr_law, "batch": band.batch_law}
    if result.parametrisation == "mup":  # under SP the gamma law's N term mixes width effects muP removes
        laws["gamma"] = band.gamma_law
    return {
        "band": band.eps,
        "notes": list(band.notes),
        **{name: _linear_summary(law, JOINT_FORMULAS[name]) for name, law in laws.items()},
    }


def _linear_summary(law, formula: str) -> dict:
    if not law.ok:
        return {"formula": formula, "reason": law.reason}
    names = list(law.coef)
    return {
        "formula": formula,
        "coef": law.coef,
        "ci": {k: list(v) for k, v in law.ci.items()},
        "ranges": {k: list(v) for k, v in law.ranges.items()},
        "n_points": law.n_points,
        "r2": law.r2,
        "bootstrap": {name: law.boot[:, i].tolist() for i, name in enumerate(names)}
        if law.boot.size
        else None,
    }


def _critical_summary(result: Analysis) -> dict | None:
    law = result.critical.law if result.critical is not None else None
    if law is None or not law.ok:
        return None
    return {
        "formula": "Bc = c * tokens**zeta (sequences)",
        "c": law.a,
        "zeta": law.b,
        "c_ci": [law.a_ci.low, law.a_ci.high],
        "zeta_ci": [law.b_ci.low, law.b_ci.high],
    }


def _power_summary(result: Analysis) -> dict | None:
    if result.power is None:
        return None
    best = result.power.overall
    return {
        "a": best.a,
        "b": best.b,
        "a_ci": [best.a_ci.low, best.a_ci.high],
        "b_ci": [best.b_ci.low, best.b_ci.high],
        "method": best.method,
        "n_runs": best.n_runs,
    }


def _diverged_by_batch(result: Analysis) -> dict[str, float]:
    # Divergence limits grow with batch size: the lr_max above takes the largest batch size's.
    runs = result.table[result.table["schedule"].eq(result.schedule) & result.table["status"].eq("diverged")]
    return {str(b): float(lr) for b, lr in runs.groupby("batch_size")["lr"].min().items()}


LR_UNITS = {
    "mup": "peak learning rate of the muP base model, before per-layer muP multipliers",
    "sp": "peak learning rate (standard parametrisation)",
    "unknown": "peak learning rate, as the table's lr column gives it (parametrisation not stated)",
    "mixed": "peak learning rate (the table mixes parametrisations)",
}


def _units(table: pd.DataFrame, parametrisation: str) -> dict:
    seq_lens = sorted(set(table["seq_len"].dropna().astype(int)))
    # several: batch sizes are not comparable
    seq_len = seq_lens[0] if len(seq_lens) == 1 else (seq_lens or None)
    return {
        "tokens": "tokens",
        "batch_size": "sequences",
        "seq_len": seq_len,
        "lr": LR_UNITS[parametrisation],
        "gamma": "lr per sequence of batch",
        "loss": "nats/token",
        "n_params": "parameters",
    }


def _provenance(result: Analysis) -> dict:
    cells, table = result.cells, result.table
    flags = pd.Series([f for text in cells["flags"] for f in text.split(";") if f]).value_counts()
    shas = sorted({str(s) for s in table["git_sha"].dropna()})
    return {
        "sweep_ids": sorted(set(table["sweep_id"])),
        "schedule": result.schedule,
        "parametrisation": result.parametrisation,
        "n_runs": len(table),
        "n_cells": len(cells),
        "n_cells_used": int(cells["used"].sum()),
        "flags": flags.to_dict(),
        "models": model_order(cells),
        "top_k": result.settings.top_k,
        "git_sha": shas[0] if len(shas) == 1 else (shas or None),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def _plain(value):
    """JSON-ready copy: numpy scalars to Python, NaN and inf to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.bool_)):
        return value.item()
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def write_coefficients(result: Analysis, path: str | Path) -> Path:
    """Write coefficients.json (see ``coefficients``) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coefficients(result), indent=2, allow_nan=False) + "\n", encoding="utf-8")
    return path


def read_coefficients(path: str | Path) -> dict:
    """Read and check a coefficients.json file."""
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise AnalysisError(
            f"could not read coefficients file '{path}': {err}; pass the coefficients.json that "
            "`powersweep analyze` wrote (under its --out)"
        ) from None
    return _checked(content, str(path))


def _checked(content: dict, where: str) -> dict:
    if not isinstance(content, dict):
        raise AnalysisError(
            f"coefficients {where}: expected a JSON object, got {type(content).__name__}; "
            "write the file with `powersweep analyze`"
        )
    for key in ("a", "b"):
        value = content.get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise AnalysisError(
                f"coefficients {where}: key {key!r} is {value!r}, must be a number; "
                "write the file with `powersweep analyze`"
            )
    if content["a"] <= 0:
        raise AnalysisError(
            f"coefficients {where}: a={content['a']!r} must be positive; "
            "write the file with `powersweep analyze`"
        )
    return content


@dataclass(frozen=True)
class Prediction:
    """The WSD-optimal peak lr at one (batch_size, tokens), with its 95% CI."""

    lr_opt: float
    ci_low: float
    ci_high: float
    ci_method: str = "bootstrap"  # "bootstrap" (paired (a, b) samples), "covariance" or "none"
    extrapolation: float = 1.0  # how many times beyond the swept token range (1: inside it)
    law: str = "pooled gamma"  # which law answered, e.g. "model 36M: lr_opt = c * B^alpha * T^beta"
    notes: tuple[str, ...] = ()  # one line each: batch size outside the fitted range, ...


def predict_lr(
    coefficients: dict | str | Path,
    *,
    batch_size: float,
    tokens: float,
    model: str | None = None,
    n_params: float | None = None,
) -> Prediction:
    """The optimal peak lr at ``batch_size`` sequences and ``tokens`` tokens, with its 95% CI.

    Without ``model`` or ``n_params``: the pooled law lr_opt = batch_size * a * tokens**b, refused when the
    file's ``headline`` says the models' laws differ or gamma is not batch-invariant. With ``model``: that
    model's law (its batch law lr_opt = c * B**alpha * T**beta when alpha's interval excludes 1, else its
    gamma law). With ``n_params``: ln lr_opt interpolated linearly in ln N between the two models around it
    (refused outside the fitted models' N). The CI comes from the paired bootstrap samples in the file.
    """
    content = _content(coefficients)
    for name, value in (("batch_size", batch_size), ("tokens", tokens)):
        if not value > 0:
            raise AnalysisError(f"{name}={value!r}: must be a positive number")
    if model is not None and n_params is not None:
        raise AnalysisError("pass --model or --n-params, not both")
    if n_params is not None:
        return _interpolated(content, batch_size, tokens, n_params)
    if model is not None:
        return _for_model(content, batch_size, tokens, model)
    _check_pooled(content)
    ln_t = math.log(tokens)
    lr = batch_size * content["a"] * tokens ** content["b"]
    low, high, method = _prediction_interval(content, ln_t, batch_size)
    return Prediction(lr, low, high, method, _extrapolation(content, tokens))


def _check_pooled(content: dict) -> None:
    headline = content.get("headline", "pooled_gamma")
    if headline in ("pooled_gamma", "none"):
        return
    models = ", ".join(content.get("per_model", {}))
    why = (
        "gamma = lr_opt / batch_size is not batch-invariant in this table"
        if headline == "per_model_batch_law"
        else "the models' gamma laws differ (the transfer test failed)"
    )
    raise AnalysisError(
        f"the pooled law does not hold: {why}; pass --model NAME (one of: {models}) or --n-params N"
    )


def _for_model(content: dict, batch_size: float, tokens: float, model: str) -> Prediction:
    per_model = content.get("per_model") or {}
    if model not in per_model:
        raise AnalysisError(
            f"--model {model!r} is not in the coefficients: choose one of {', '.join(per_model)}"
        )
    batch_law = (content.get("batch_laws") or {}).get(model)
    fit = per_model[model]
    if batch_law is not None and not batch_law.get("linear", True):
        lr, low, high = _batch_law_lr(batch_law, batch_size, tokens)
        ranges, law = (
            batch_law,
            f"model {model}: lr_opt = c * B^alpha * T^beta (alpha = {batch_law['alpha']:.3g})",
        )
    else:
        if fit.get("a") is None or fit.get("b") is None:
            raise AnalysisError(
                f"model {model!r} has no fitted law in the coefficients: see the report's notes"
            )
        lr, low, high = _gamma_lr(fit, batch_size, tokens)
        ranges, law = fit, f"model {model}: gamma = a * T^b"
    notes = _range_notes(ranges, batch_size, tokens)
    return Prediction(lr, low, high, "bootstrap", _extrapolation(ranges, tokens), law, notes)


def _gamma_lr(fit: dict, batch_size: float, tokens: float) -> tuple[float, float, float]:
    samples = fit.get("bootstrap") or {}
    a, b = np.asarray(samples.get("a") or [], float), np.asarray(samples.get("b") or [], float)
    lr = batch_size * fit["a"] * tokens ** fit["b"]
    if len(a) < 20:
        return lr, float("nan"), float("nan")
    low, high = np.percentile(np.log(batch_size * a) + b * math.log(tokens), [2.5, 97.5])
    return lr, math.exp(low), math.exp(high)


def _batch_law_lr(law: dict, batch_size: float, tokens: float) -> tuple[float, float, float]:
    lr = law["c"] * batch_size ** law["alpha"] * tokens ** law["beta"]
    boot = law.get("bootstrap") or {}
    ln_c = np.asarray(boot.get("ln_c") or [], float)
    if len(ln_c) < 20:
        return lr, float("nan"), float("nan")
    samples = (
        ln_c + np.asarray(boot["alpha"]) * math.log(batch_size) + np.asarray(boot["beta"]) * math.log(tokens)
    )
    low, high = np.percentile(samples, [2.5, 97.5])
    return lr, math.exp(low), math.exp(high)


def _range_notes(ranges: dict, batch_size: float, tokens: float) -> tuple[str, ...]:
    notes = []
    batch_range = ranges.get("batch_range")
    if batch_range and not batch_range[0] / 1.5 <= batch_size <= batch_range[1] * 1.5:
        notes.append(
            f"batch_size = {batch_size:g} is outside the fitted batch sizes {batch_range[0]:g} to "
            f"{batch_range[1]:g} sequences: an extrapolation"
        )
    return tuple(notes)


def _interpolated(content: dict, batch_size: float, tokens: float, n_params: float) -> Prediction:
    sizes = sorted(
        (m["n_params"], name)
        for name, m in (content.get("per_model") or {}).items()
        if m.get("n_params") and m.get("a") is not None
    )
    if len({n for n, _ in sizes}) < 2:
        raise AnalysisError(
            f"--n-params {n_params:g} needs fitted models of 2 or more sizes with n_params in the "
            f"table; these coefficients have {len(sizes)}: pass --model instead"
        )
    if not sizes[0][0] <= n_params <= sizes[-1][0]:
        raise AnalysisError(
            f"--n-params {n_params:g} is outside the fitted models' sizes {sizes[0][0]:g} to "
            f"{sizes[-1][0]:g}: pass a size inside them (an N law is not extrapolated)"
        )
    upper = next(i for i, (n, _) in enumerate(sizes) if n >= n_params)
    lower = max(upper - 1, 0)
    below, above = (_for_model(content, batch_size, tokens, sizes[i][1]) for i in (lower, upper))
    span = math.log(sizes[upper][0] / sizes[lower][0])
    weight = math.log(n_params / sizes[lower][0]) / span if span > 0 else 0.0

    def mix(x: float, y: float) -> float:
        return math.exp((1 - weight) * math.log(x) + weight * math.log(y))

    law = f"interpolated in ln N between models {sizes[lower][1]} and {sizes[upper][1]}"
    return Prediction(
        mix(below.lr_opt, above.lr_opt),
        mix(below.ci_low, above.ci_low),
        mix(below.ci_high, above.ci_high),
        "bootstrap",
        max(below.extrapolation, above.extrapolation),
        law,
        tuple(dict.fromkeys(below.notes + above.notes)),
    )


def _content(coefficients: dict | str | Path) -> dict:
    if isinstance(coefficients, (str, Path)):
        return read_coefficients(coefficients)
    return _checked(coefficients, "(in memory)")


def _prediction_interval(content: dict, ln_t: float, batch_size: float) -> tuple[float, float, str]:
    samples = content.get("bootstrap") or {}
    a, b = np.asarray(samples.get("a") or [], float), np.asarray(samples.get("b") or [], float)
    if len(a) >= 20 and len(a) == len(b):
        low, high = np.percentile(np.log(batch_size * a) + b * ln_t, [2.5, 97.5])
        return math.exp(low), math.exp(high), "bootstrap"
    cov = np.asarray(content.get("cov_ln_a_b") or np.full((2, 2), np.nan), dtype=float)
    var = cov[0, 0] + ln_t * ln_t * cov[1, 1] + 2 * ln_t * cov[0, 1]
    if not np.isfinite(var):
        return float("nan"), float("nan"), "none"
    centre = math.log(batch_size * content["a"]) + content["b"] * ln_t
    half = stats.norm.ppf(0.975) * math.sqrt(max(var, 0.0))
    return math.exp(centre - half), math.exp(centre + half), "covariance"


def _extrapolation(content: dict, tokens: float) -> float:
    low, high = (content.get("tokens_range") or [tokens, tokens])[:2]
    if low is None or high is None:
        return 1.0
    return max(tokens / high, low / tokens, 1.0)


def lm_engine_snippet(
    coefficients: dict | str | Path, *, batch_size: int, seq_len: int, lr_max: float | None = None
) -> dict:
    """Config fragment for the power scheduler of IBM's lm-engine (open-lm-engine/lm-engine).

    Assumption, from lm_engine/optimization/lr_scheduler.py: its PowerScheduler sets
    lr(step) = min(optimizer lr, a * (step * c)**b) after a linear warmup to that value, and needs
    num_constant_steps == 0. With c = tokens per step = batch_size * seq_len, step * c is the number
    of tokens seen n, so the paper's lr(n) = min(lr_max, batch_size * a * n**b) needs lm-engine's
    a = batch_size * a, its b = b, and the optimizer lr = lr_max. ``batch_size`` is the global batch
    in sequences (all data-parallel ranks and accumulation steps). Decay phases are set elsewhere.
    """
    content = _content(coefficients)
    for name, value in (("batch_size", batch_size), ("seq_len", seq_len)):
        if not (isinstance(value, (int, np.integer)) and value > 0):
            raise AnalysisError(f"{name}={value!r}: must be a positive whole number")
    lr_max = lr_max if lr_max is not None else content.get("lr_max")
    if lr_max is None or not lr_max > 0:
        raise AnalysisError(
            f"lr_max={lr_max!r}: the coefficients have no lr_max (no run diverged); pass one "
            "(--lr-max on the command line), e.g. --lr-max 0.02 as in the paper"
        )
    return {
        "optimizer_args": {"class_args": {"lr": float(lr_max)}},
        "lr_scheduler_args": {
            "lr_decay_style": "power",
            "num_constant_steps": 0,
            "extra_lr_scheduler_args": {
                "a": float(batch_size * content["a"]),
                "b": float(content["b"]),
                "c": int(batch_size * seq_len),
            },
        },
    }


@dataclass(frozen=True)
class JointPrediction:
    """lr_opt(N, T) and the best batch size B_opt(T) from the joint (band) laws, with 95% CIs."""

    lr_opt: float
    lr_ci: tuple[float, float]
    batch_opt: float  # sequences; NaN without a batch law (one swept batch size), ``notes`` says why
    batch_ci: tuple[float, float]
    notes: tuple[str, ...] = ()


def predict_joint(
    coefficients: dict | str | Path, *, tokens: float, n_params: float | None = None
) -> JointPrediction:
    """The joint laws at (n_params, tokens): refused outside the fitted N (or without N when the law has an N
    term); a T outside the fitted tokens is noted."""
    content = _content(coefficients)
    joint = content.get("joint_law") or {}
    lr_law, batch_law = joint.get("lr") or {}, joint.get("batch") or {}
    if "coef" not in lr_law:
        raise AnalysisError(
            f"the coefficients have no joint lr law ({lr_law.get('reason', 'not fitted')}); "
            "predict with the headline law instead (drop --law joint)"
        )
    terms = {"ln_T": math.log(tokens)}
    if "ln_N" in lr_law["coef"]:
        low, high = lr_law["ranges"]["N"]
        if n_params is None or not low <= n_params <= high:
            raise AnalysisError(
                f"--n-params {n_params if n_params is None else f'{n_params:g}'}: the joint lr law "
                f"needs a model size inside its fitted range {low:g} to {high:g} parameters"
            )
        terms["ln_N"] = math.log(n_params)
    fitted = [(name, law) for name, law in (("lr", lr_law), ("batch", batch_law)) if "coef" in law]
    notes = tuple(
        f"tokens = {tokens:g} is outside the joint {name} law's fitted tokens {law['ranges']['T'][0]:g} to "
        f"{law['ranges']['T'][1]:g}: an extrapolation"
        for name, law in fitted
        if not law["ranges"]["T"][0] <= tokens <= law["ranges"]["T"][1]
    )
    lr, lr_ci = _linear_prediction(lr_law, terms)
    if "coef" not in batch_law:  # e.g. one swept batch size: no batch answer, the lr one still holds
        nan = float("nan")
        return JointPrediction(
            lr, lr_ci, nan, (nan, nan), notes + (f"no batch_opt: {batch_law.get('reason')}",)
        )
    batch, batch_ci = _linear_prediction(batch_law, terms)
    return JointPrediction(lr, lr_ci, batch, batch_ci, notes)


def _linear_prediction(law: dict, terms: dict[str, float]) -> tuple[float, tuple[float, float]]:
    coef = law["coef"]
    centre = coef["const"] + sum(v * terms[k] for k, v in coef.items() if k != "const")
    boot = law.get("bootstrap") or {}
    if not boot or len(boot.get("const") or []) < 20:
        return math.exp(centre), (float("nan"), float("nan"))
    samples = np.asarray(boot["const"]) + sum(np.asarray(boot[k]) * terms[k] for k in coef if k != "const")
    low, high = np.percentile(samples, [2.5, 97.5])
    return math.exp(centre), (math.exp(low), math.exp(high))


def scheduler_coefficients(coefficients: dict | str | Path, *, model: str | None, batch_size: float) -> dict:
    """The file's content with ``a`` and ``b`` of the law that answers for ``model`` at ``batch_size``, so
    that the Power schedule lr(n) = min(lr_max, batch_size * a * n**b) follows it: the pooled law without a
    model; the model's gamma law; or, for a batch law, a = c * batch_size**(alpha - 1) and b = beta."""
    content = _content(coefficients)
    if model is None:
        _check_pooled(content)
        return content
    _for_model(content, batch_size, 1.0, model)  # the same checks and errors as a prediction
    law = (content.get("batch_laws") or {}).get(model)
    if law is not None and not law.get("linear", True):
        return content | {"a": law["c"] * batch_size ** (law["alpha"] - 1), "b": law["beta"]}
    fit = content["per_model"][model]
    return content | {"a": fit["a"], "b": fit["b"]}
