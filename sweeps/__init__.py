"""Sweeps: specs, planning, Ray Tune execution and the Parquet results store, behind a small public layer.

The Optuna mode lives in powersweep.sweeps.search (imported on use: it needs Ray and Optuna). Planning is
`powersweep.sweeps.plan.plan(spec)`: the package exports names lazily, and `powersweep.sweeps.plan` is the
module."""

if __name__ != "powersweep.sweeps":  # a checkout's folder imported by its bare name: a second copy
    raise ImportError(f"import this package as powersweep.sweeps, not {__name__}")

import importlib

# public name -> module defining it: imported on first use, so importing one submodule (e.g. for
# `powersweep --help`) does not import torch, Ray or pandas through this package.
_EXPORTS = {
    "LineageJob": "powersweep.sweeps.plan",
    "PackedJob": "powersweep.sweeps.plan",
    "Plan": "powersweep.sweeps.plan",
    "Study": "powersweep.sweeps.plan",
    "trial_job": "powersweep.sweeps.plan",
    "SpecError": "powersweep.sweeps.spec",
    "SweepSpec": "powersweep.sweeps.spec",
    "load_spec": "powersweep.sweeps.spec",
    "ResultStore": "powersweep.sweeps.store",
    "StoreError": "powersweep.sweeps.store",
    "resume": "powersweep.sweeps.sweep",
    "status": "powersweep.sweeps.sweep",
    "submit": "powersweep.sweeps.sweep",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
