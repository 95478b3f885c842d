"""Train one config for a few steps in this (fresh) process and print, as one JSON line: the first step's
seconds (it holds any compile), the steady tokens/s of the steps after it, the losses, inductor's cache
counters (hits and misses of the FX graph cache and the AOT autograd cache) and the seconds of dynamo's
tracing and of its backend (compiling, or loading from the cache).

benchmarks/gpu.py runs it in fresh processes (eager; compiled with a cold cache; compiled again with the
cache the first left) for its compile table. The compile cache is wherever POWERSWEEP_COMPILE_CACHE points
(proxy_models/compile_cache.py).

Run: .venv/bin/python benchmarks/first_step.py '{"model": "cpu-s", "batch_size": 16, "compile": true,
     "model_overrides": {"seq_len": 256}}' [--steps 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import sys
import time

START = time.perf_counter()

import torch  # noqa: E402  (after START: the import is part of what a fresh process pays)
from torch._dynamo.utils import compilation_time_metrics, counters  # noqa: E402

from powersweep.proxy_models.schedules import ScheduleConfig  # noqa: E402
from powersweep.proxy_models.trainer import TrainConfig, Trainer  # noqa: E402

# dynamo's phases (seconds, summed over the graphs compiled): tracing the Python bytecode into a graph, and
# the backend (inductor: generating and compiling kernels, or loading them from the cache)
PHASES = {"tracing_s": "bytecode_tracing", "backend_s": "OutputGraph.call_user_compiler"}
COUNTERS = (
    ("inductor", "fxgraph_cache_hit"),
    ("inductor", "fxgraph_cache_miss"),
    ("aot_autograd", "autograd_cache_hit"),
    ("aot_autograd", "autograd_cache_miss"),
)


def first_step(config: dict, *, steps: int, device: str) -> dict:
    """Build the Trainer, time its first step alone, then `steps` more together."""
    seq_len = config["model_overrides"]["seq_len"]
    cfg = TrainConfig(
        **config,
        device=device,
        tokens=config["batch_size"] * seq_len * (steps + 1),
        schedule=ScheduleConfig(name="constant", lr=1e-3),
        log_every_steps=10**6,
    )
    trainer = Trainer(cfg)
    start = time.perf_counter()
    trainer.train_to(1, total_tokens=None)  # reads the loss at its end: the device is idle then
    first_step_s = time.perf_counter() - start
    since_start_s = time.perf_counter() - START
    start = time.perf_counter()
    trainer.train_to(1 + steps, total_tokens=None)
    return {
        "compiled": trainer.compiled,
        "device": str(trainer.device),
        "first_step_s": first_step_s,
        "process_to_first_step_s": since_start_s,
        "tokens_per_s": steps * cfg.tokens_per_step / (time.perf_counter() - start),
        "loss_first": trainer.first_loss,
        "loss_last": trainer.recent_losses[-1],
        **{name: counters[group][name] for group, name in COUNTERS},
        **{key: sum(compilation_time_metrics.get(phase, [])) for key, phase in PHASES.items()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "config", help="TrainConfig fields as JSON: model, batch_size, compile, model_overrides"
    )
    parser.add_argument("--steps", type=int, default=5, help="steady steps timed after the first")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(json.dumps(first_step(json.loads(args.config), steps=args.steps, device=args.device)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
