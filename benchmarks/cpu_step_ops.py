"""Torch operations one training step of the main job's model dispatches: a count no busy host disturbs.

cpu-xxs at batch 4 x 64 (the main job's shape), the 4th step of Trainer.train_to, counted with a
TorchDispatchMode. Run it from two trees to compare their per-step work:
    .venv/bin/python benchmarks/cpu_step_ops.py
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/cpu_step_ops.py
"""

from __future__ import annotations

import collections
import json

from torch.utils._python_dispatch import TorchDispatchMode

from powersweep import proxy_models
from powersweep.proxy_models.schedules import ScheduleConfig
from powersweep.proxy_models.trainer import TrainConfig, Trainer


class CountOps(TorchDispatchMode):
    """Counts every aten operation dispatched inside it."""

    def __init__(self):
        super().__init__()
        self.counts: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func)] += 1
        return func(*args, **(kwargs or {}))


def main() -> None:
    config = TrainConfig(
        model="cpu-xxs",
        model_overrides={"seq_len": 64},
        batch_size=4,
        tokens=4 * 64 * 10**6,
        schedule=ScheduleConfig(name="constant", lr=1e-2),
        device="cpu",
        log_every_steps=10**6,
    )
    trainer = Trainer(config)
    trainer.train_to(3, total_tokens=None)
    with CountOps() as mode:
        trainer.train_to(4, total_tokens=None)
    print(f"{proxy_models.__file__}: {sum(mode.counts.values())} aten ops in one step")
    print(json.dumps(dict(sorted(mode.counts.items()))))


if __name__ == "__main__":
    main()
