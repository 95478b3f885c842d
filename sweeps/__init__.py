"""Sweeps: specs, planning, Ray Tune execution and the Parquet results store, behind a small public layer.

The Optuna mode lives in sweeps.search (imported on use: it needs Ray and Optuna). Planning is
`sweeps.plan.plan(spec)`: the package exports names lazily, and `sweeps.plan` is the module."""

import importlib

# public name -> module defining it: imported on first use, so importing one submodule (e.g. for
# `powersweep --help`) does not import torch, Ray or pandas through this package.
_EXPORTS = {
    "LineageJob": "sweeps.plan",
    "PackedJob": "sweeps.plan",
    "Plan": "sweeps.plan",
    "Study": "sweeps.plan",
    "trial_job": "sweeps.plan",
    "SpecError": "sweeps.spec",
    "SweepSpec": "sweeps.spec",
    "load_spec": "sweeps.spec",
    "ResultStore": "sweeps.store",
    "StoreError": "sweeps.store",
    "resume": "sweeps.sweep",
    "status": "sweeps.sweep",
    "submit": "sweeps.sweep",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
