"""Peak process memory of one training step on CPU, each variant in a fresh process.

One paper-12m step at 4 x 1024 (fp32, vocab 49152), as the Trainer runs it, with each output head and
memory setting; the peak is the process's RSS high-water (getrusage ru_maxrss) after building the trainer
and after the step, next to the estimate of proxy_models/memory.py for the same step (which leaves out
the interpreter, torch and the corpus: the 'before step' column).

Run: .venv/bin/python benchmarks/step_memory.py [--preset paper-12m --batch-size 4 --seq-len 1024]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

VARIANTS = {
    "full head": {"head": "full"},
    "chunked head (default)": {},
    "chunked head, checkpointed blocks": {"activation_checkpointing": "on"},
    "auto micro-batch, 1 GiB budget": {"micro_batch_size": "auto", "memory_budget_gib": 1.0},
}


def child(preset: str, batch_size: int, seq_len: int, settings: dict) -> dict:
    """Build the trainer, train one step, and report RSS high-water before and after, and the estimate."""
    from powersweep.proxy_models.data import DataConfig
    from powersweep.proxy_models.memory import GIB, step_memory
    from powersweep.proxy_models.schedules import ScheduleConfig
    from powersweep.proxy_models.trainer import TrainConfig, Trainer

    config = TrainConfig(
        model=preset,
        model_overrides={"seq_len": seq_len},
        batch_size=batch_size,
        device="cpu",
        tokens=batch_size * seq_len * 2,
        schedule=ScheduleConfig(name="constant", lr=1e-3),
        data=DataConfig(eval_tokens=8192),
        **settings,
    )
    trainer = Trainer(config)
    before = _rss_gib()
    start = time.perf_counter()
    trainer.train_to(1, total_tokens=None)
    seconds = time.perf_counter() - start
    estimate = step_memory(
        config.proxy,
        micro_batch_size=trainer.micro_batch_size,
        compute_bytes=4,
        param_bytes=4,
        activation_checkpointing=trainer.model.activation_checkpointing,
        head=trainer.model.head,
        fused_head=False,  # a CPU step
    )
    return {
        "before_step_gib": before,
        "peak_gib": _rss_gib(),
        "estimate_gib": estimate.peak / GIB,
        "micro_batch_size": trainer.micro_batch_size,
        "checkpointing": trainer.model.activation_checkpointing,
        "step_s": seconds,
    }


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="paper-12m")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one variant's settings, as JSON
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.preset, args.batch_size, args.seq_len, json.loads(args.child))))
        return 0
    print(f"{args.preset} at {args.batch_size} x {args.seq_len}, one step, CPU fp32, each in a fresh process")
    print(
        f"{'variant':<36}{'before step':>12}{'peak RSS':>10}{'estimate':>10}"
        f"{'micro':>7}{'ckpt':>6}{'step s':>8}"
    )
    for name, settings in VARIANTS.items():
        done = subprocess.run(
            [
                sys.executable,
                __file__,
                "--preset",
                args.preset,
                "--batch-size",
                str(args.batch_size),
                "--seq-len",
                str(args.seq_len),
                "--child",
                json.dumps(settings),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{name:<36}{r['before_step_gib']:>10.2f}Gi{r['peak_gib']:>8.2f}Gi{r['estimate_gib']:>8.2f}Gi"
            f"{r['micro_batch_size']:>7}{'on' if r['checkpointing'] else 'off':>6}{r['step_s']:>8.1f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
