"""One proxy run: muP models, schedules, data and the trainer. Knows nothing of Ray or sweeps."""

if __name__ != "powersweep.proxy_models":  # a checkout's folder imported by its bare name: a second copy
    raise ImportError(f"import this package as powersweep.proxy_models, not {__name__}")

import importlib

# public name -> module defining it: imported on first use, so importing one submodule (e.g. for
# `powersweep --help`) does not import torch, Ray or pandas through this package.
_EXPORTS = {
    "PRESETS": "powersweep.proxy_models.shapes",
    "ConfigError": "powersweep.proxy_models.shapes",
    "ProxyConfig": "powersweep.proxy_models.shapes",
    "get_preset": "powersweep.proxy_models.shapes",
    "DataConfig": "powersweep.proxy_models.train_config",
    "load_corpus": "powersweep.proxy_models.data",
    "plan_branches": "powersweep.proxy_models.budgets",
    "train_lineage": "powersweep.proxy_models.lineage",
    "train_packed_lineage": "powersweep.proxy_models.lineage",
    "ProxyLM": "powersweep.proxy_models.model",
    "PackedTrainer": "powersweep.proxy_models.packed",
    "ScheduleConfig": "powersweep.proxy_models.schedules",
    "RunResult": "powersweep.rows",
    "TrainConfig": "powersweep.proxy_models.train_config",
    "Trainer": "powersweep.proxy_models.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
