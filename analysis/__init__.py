"""Learning-rate laws from sweeps of small muP proxy models (the Power Scheduler methodology).

Data flow: ``load_table`` (one tidy row per run-evaluation) -> ``analyze`` (per-cell lr_opt,
gamma = a * T**b fits with bootstrap CIs, critical batch size, sensitivity, band and (a, b)
search) -> ``write_report`` (figures, index.html, cells.csv, coefficients.json) -> ``predict_lr``.
Modules: table, optimum, fit, regimes, band, power_search, plots, report, export, synthetic,
commands. Nothing here imports torch, ray, proxy_models or sweeps.

>>> from analysis import load_table, analyze, write_report, predict_lr
>>> result = analyze(load_table("runs/"))
>>> write_report(result.table, "out/analysis", result=result)
"""

from analysis.errors import AnalysisError
from analysis.export import Prediction, lm_engine_snippet, predict_lr, read_coefficients, write_coefficients
from analysis.fit import fit_power_law
from analysis.optimum import find_optima
from analysis.pipeline import Analysis, analyze
from analysis.report import write_report
from analysis.synthetic import PlantedLaw, SweepGrid, synthetic_table
from analysis.table import load_table

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
