"""A sweep's identity: the settings every one of its runs shares. A stored sweep takes a spec again only if
they are equal; its grids may change (values added run as new cells, values removed leave their rows stored).

Settings are everything under `train:` and the search's own settings (mode, Optuna's ranges, the adaptive
search's lattice and budgets). Grid values (models, parametrisations, lr, batch sizes, budgets, seeds,
power a, b and lr_max, Optuna's trial count) and `run:` (how and where trials execute: resources, packing,
storage, trackers, compiling; no id depends on them) are not.

>>> differences(stored_spec, new_spec)
['train.warmup_tokens: 2000.0 -> 4000.0']
"""

from __future__ import annotations

from typing import Any

from powersweep.proxy_models.settings import short
from powersweep.sweeps.spec import SweepSpec

GRIDS = (
    "models",
    "parametrisation",
    "lr",
    "batch_size",
    "tokens",
    "seeds",
    "power_a",
    "power_b",
    "lr_max",
    "n_trials",
)
SEARCH_EXECUTION = ("study_concurrency",)  # how a search runs its trials, not what they train


def settings(spec: SweepSpec) -> dict[str, Any]:
    """The spec's shared settings as flat dotted keys, e.g. {'train.warmup_tokens': 2000.0, ...}."""
    values = spec.to_dict()
    search = {k: v for k, v in values["search"].items() if k not in GRIDS + SEARCH_EXECUTION}
    return {**_flat("search", search), **_flat("train", values["train"])}


def differences(stored: SweepSpec, new: SweepSpec) -> list[str]:
    """'field: stored -> new' for each shared setting the two specs give differently, sorted by field."""
    old, now = settings(stored), settings(new)
    return [
        f"{key}: {short(old.get(key))} -> {short(now.get(key))}"
        for key in sorted(old.keys() | now.keys())
        if old.get(key) != now.get(key)
    ]


def _flat(prefix: str, values: dict) -> dict[str, Any]:
    flat = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict) and key != "model_overrides":  # overrides compare as one mapping
            flat.update(_flat(name, value))
        else:
            flat[name] = value
    return flat
