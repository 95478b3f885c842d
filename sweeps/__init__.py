"""Sweeps: specs, planning, Ray Tune execution and the Parquet results store, behind a small public layer.

The Optuna mode lives in sweeps.search (imported on use: it needs Ray and Optuna)."""

from sweeps.plan import LineageJob, PackedJob, Plan, Study, plan, trial_job
from sweeps.spec import SpecError, SweepSpec, load_spec
from sweeps.store import ResultStore, StoreError
from sweeps.sweep import resume, status, submit

__all__ = [
    "LineageJob", "PackedJob", "Plan", "Study", "plan", "trial_job", "SpecError", "SweepSpec", "load_spec",
    "ResultStore", "StoreError", "resume", "status", "submit",
]
