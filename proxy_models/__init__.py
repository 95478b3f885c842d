"""One proxy run: muP models, schedules, data and the trainer. Knows nothing of Ray or sweeps."""

import importlib

# public name -> module defining it: imported on first use, so importing one submodule (e.g. for
# `powersweep --help`) does not import torch, Ray or pandas through this package.
_EXPORTS = {
    "PRESETS": "proxy_models.config",
    "ConfigError": "proxy_models.config",
    "ProxyConfig": "proxy_models.config",
    "get_preset": "proxy_models.config",
    "DataConfig": "proxy_models.run_config",
    "load_corpus": "proxy_models.data",
    "plan_branches": "proxy_models.budgets",
    "train_lineage": "proxy_models.lineage",
    "train_packed_lineage": "proxy_models.lineage",
    "ProxyLM": "proxy_models.model",
    "PackedTrainer": "proxy_models.packed",
    "ScheduleConfig": "proxy_models.schedules",
    "RunResult": "proxy_models.trainer",
    "TrainConfig": "proxy_models.run_config",
    "Trainer": "proxy_models.trainer",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
