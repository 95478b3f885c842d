"""Learning-rate laws from sweeps of small muP proxy models (the Power Scheduler methodology).

Data flow: ``load_table`` (one tidy row per run-evaluation) -> ``analyze`` (per-cell lr_opt from a
two-sided bowl with bootstrap draws, gamma = a * T**b fits, per-model batch laws lr_opt = c * B**alpha
* T**beta, critical batch size, sensitivity, the joint band laws and the (a, b) search, all with CIs)
-> ``write_report`` (figures, index.html, cells.csv, coefficients.json) -> ``predict_lr``.
Modules: table, merge (budgets that differ by rounding), order (models by size), bowl, optimum, fit,
batch_scaling, regimes, band, power_search, width_transfer (lr_opt against width, muP and SP), plots, answer,
report, export, summary, watch, synthetic, calibration. Nothing here imports torch, ray, proxy_models or
sweeps: the results columns come from their one declaration, `powersweep.rows`; the command line,
`powersweep.cli`, calls in.

>>> from powersweep.analysis import load_table, analyze, write_report, predict_lr
>>> result = analyze(load_table("runs/"))
>>> write_report(result.table, "out/analysis", result=result)
"""

if __name__ != "powersweep.analysis":  # a checkout's folder imported by its bare name: a second copy
    raise ImportError(f"import this package as powersweep.analysis, not {__name__}")

import importlib

from powersweep.analysis.errors import AnalysisError

# Public name -> module. Loaded on first use, so that `import analysis` (the CLI's AnalysisError) does not
# pull in pandas, scipy and matplotlib.
_LAZY = {
    "Analysis": "pipeline",
    "analyze": "pipeline",
    "PlantedLaw": "synthetic",
    "SweepGrid": "synthetic",
    "synthetic_table": "synthetic",
    "Prediction": "export",
    "lm_engine_snippet": "export",
    "predict_lr": "export",
    "read_coefficients": "export",
    "write_coefficients": "export",
    "find_optima": "optimum",
    "fit_power_law": "fit",
    "write_report": "report",
    "load_table": "table",
}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)


__all__ = [
    "AnalysisError",
    "Analysis",
    "PlantedLaw",
    "Prediction",
    "SweepGrid",
    "analyze",
    "find_optima",
    "fit_power_law",
    "lm_engine_snippet",
    "load_table",
    "predict_lr",
    "read_coefficients",
    "synthetic_table",
    "write_coefficients",
    "write_report",
]
