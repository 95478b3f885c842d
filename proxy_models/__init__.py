"""One proxy run: muP models, schedules, data and the trainer. Knows nothing of Ray or sweeps."""

from proxy_models.config import PRESETS, ConfigError, ProxyConfig, get_preset
from proxy_models.data import DataConfig, load_corpus
from proxy_models.lineage import plan_branches, train_lineage, train_packed_lineage
from proxy_models.model import ProxyLM
from proxy_models.schedules import ScheduleConfig
from proxy_models.trainer import RunResult, TrainConfig, Trainer

__all__ = [
    "PRESETS", "ConfigError", "ProxyConfig", "get_preset", "DataConfig", "load_corpus", "plan_branches",
    "train_lineage", "train_packed_lineage", "ProxyLM", "ScheduleConfig", "RunResult", "TrainConfig", "Trainer",
]
