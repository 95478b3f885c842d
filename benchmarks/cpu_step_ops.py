"""Torch operations one training step dispatches: a count no busy host disturbs.

By default the CPU main job's model (cpu-xxs at batch 4 x 64), the 4th step of Trainer.train_to; with
--pack K, a step of K packed variants (PackedTrainer) of --preset at --shape, e.g. the GPU main job's step
with few tokens (the count does not depend on them). Counted with a TorchDispatchMode. Run it from two trees
to compare their per-step work:
    .venv/bin/python benchmarks/cpu_step_ops.py
    .venv/bin/python benchmarks/cpu_step_ops.py --preset paper-12m --shape 1x16 --pack 8 --vocab-size 256
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/cpu_step_ops.py [...]
"""

from __future__ import annotations

import argparse
import collections
import json

from torch.utils._python_dispatch import TorchDispatchMode

from powersweep import proxy_models
from powersweep.proxy_models.packed import PackedTrainer
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="cpu-xxs")
    parser.add_argument("--shape", default="4x64", help="batch x seq")
    parser.add_argument("--pack", type=int, default=0, help="K packed variants (0: one solo Trainer)")
    parser.add_argument("--vocab-size", type=int, default=None, help="default: the preset's")
    args = parser.parse_args()
    batch_size, seq_len = (int(n) for n in args.shape.split("x"))
    overrides = {"seq_len": seq_len, **({"vocab_size": args.vocab_size} if args.vocab_size else {})}
    config = TrainConfig(
        model=args.preset,
        model_overrides=overrides,
        batch_size=batch_size,
        tokens=batch_size * seq_len * 10**6,
        schedule=ScheduleConfig(name="constant", lr=1e-2),
        device="cpu",
        log_every_steps=10**6,
    )
    if args.pack:
        schedules = [ScheduleConfig(name="constant", lr=1e-3 * (i + 1)) for i in range(args.pack)]
        trainer = PackedTrainer(config, schedules)
    else:
        trainer = Trainer(config)
    trainer.train_to(3, total_tokens=None)
    with CountOps() as mode:
        trainer.train_to(4, total_tokens=None)
    what = f"{args.preset} {args.shape}" + (f", {args.pack} packed variants" if args.pack else "")
    print(f"{proxy_models.__file__}: {what}: {sum(mode.counts.values())} aten ops in one step")
    print(json.dumps(dict(sorted(mode.counts.items()))))


if __name__ == "__main__":
    main()
