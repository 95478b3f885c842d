"""muP optimizer parameter groups: hidden matrices learn at lr / m_width (Table 1, learning rate scaling).

Each group carries `lr_scale`, the multiplier of the schedule's lr for that group; the trainer sets
`group["lr"] = group["lr_scale"] * schedule_lr` every step, so the schedule stays one pure function.
"""

from __future__ import annotations

import torch.nn as nn


def is_hidden_matrix(name: str, param: nn.Parameter) -> bool:
    """Internal weight matrices: every matrix but the (tied) embedding. Norm gains are vectors."""
    return param.ndim >= 2 and name != "wte.weight"


def param_groups(model: nn.Module, *, m_width: float, weight_decay: float) -> list[dict]:
    """AdamW groups: hidden matrices (lr / m_width, decayed), embedding (lr, decayed), gains (lr, no decay)."""
    hidden, embedding, gains = [], [], []
    for name, p in model.named_parameters():
        if is_hidden_matrix(name, p):
            hidden.append(p)
        elif p.ndim >= 2:
            embedding.append(p)
        else:
            gains.append(p)
    groups = [
        {"name": "hidden", "params": hidden, "lr_scale": 1.0 / m_width, "weight_decay": weight_decay},
        {"name": "embedding", "params": embedding, "lr_scale": 1.0, "weight_decay": weight_decay},
        {"name": "gains", "params": gains, "lr_scale": 1.0, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def set_lr(optimizer, lr: float) -> None:
    """Set every group's lr to its muP scale times the schedule's lr."""
    for group in optimizer.param_groups:
        group["lr"] = group["lr_scale"] * lr
