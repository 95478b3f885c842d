"""Sweeps: specs, planning, Ray Tune execution and the Parquet results store, behind a small public layer."""

from sweeps.plan import LineageJob, PackedJob, Plan, plan
from sweeps.spec import SpecError, SweepSpec, load_spec
from sweeps.store import ResultStore, StoreError
from sweeps.sweep import resume, status, submit

__all__ = [
    "LineageJob", "PackedJob", "Plan", "plan", "SpecError", "SweepSpec", "load_spec", "ResultStore", "StoreError",
    "resume", "status", "submit",
]
