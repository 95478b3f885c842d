"""muP optimizer settings: hidden matrices learn at lr / m_width (Table 1, learning rate scaling).

`multipliers` is the one place that says, per parameter, its multiplier of the schedule's lr and its weight
decay. The solo trainer groups parameters by them (`param_groups`; it sets `group["lr"] = group["lr_scale"] *
schedule_lr` every step, so the schedule stays one pure function); the packed trainer spreads them over its
stacked parameters (proxy_models/packed.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch.nn as nn


class Multipliers(NamedTuple):
    """What AdamW applies to one parameter: lr = lr_scale * schedule lr; decoupled weight decay."""

    group: str  # hidden | embedding | gains
    lr_scale: float
    weight_decay: float


def is_hidden_matrix(name: str, param: nn.Parameter) -> bool:
    """Internal weight matrices: every matrix but the (tied) embedding. Norm gains are vectors."""
    return param.ndim >= 2 and name != "wte.weight"


def multipliers(model: nn.Module, *, m_width: float, weight_decay: float) -> dict[str, Multipliers]:
    """Per parameter name: hidden matrices lr / m_width and decayed, the embedding lr and decayed, gains lr
    and not decayed."""
    table = {}
    for name, p in model.named_parameters():
        if is_hidden_matrix(name, p):
            table[name] = Multipliers("hidden", 1.0 / m_width, weight_decay)
        elif p.ndim >= 2:
            table[name] = Multipliers("embedding", 1.0, weight_decay)
        else:
            table[name] = Multipliers("gains", 1.0, 0.0)
    return table


def param_groups(model: nn.Module, *, m_width: float, weight_decay: float) -> list[dict]:
    """AdamW groups of `multipliers`: hidden matrices, embedding, gains
    (in that order; empty ones left out)."""
    table = multipliers(model, m_width=m_width, weight_decay=weight_decay)
    groups: dict[str, dict] = {}
    for group in ("hidden", "embedding", "gains"):
        for name, p in model.named_parameters():
            m = table[name]
            if m.group == group:
                groups.setdefault(
                    group,
                    {"name": group, "params": [], "lr_scale": m.lr_scale, "weight_decay": m.weight_decay},
                )["params"].append(p)
    return list(groups.values())


def set_lr(optimizer, lr: float) -> None:
    """Set every group's lr to its muP scale times the schedule's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr_scale"] * lr
